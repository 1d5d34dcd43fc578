"""Task 1 of the ICASSP 2024 Auditory EEG Challenge: match-mismatch (which of K stimulus segments the EEG heard).

data.py (windows with imposters from split_data), models/ (registry: dilated_conv baseline, vlaai kit
encoder, ridge linear baseline), train.py (util.trainer.fit), evaluate.py (accuracy against chance and
the no-EEG controls), predict.py (the official test-set layout -> per-subject JSONs). See docs/task1.md.
"""
