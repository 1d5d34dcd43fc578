"""speaker_extraction package."""
