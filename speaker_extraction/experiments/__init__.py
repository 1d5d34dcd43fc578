"""speaker_extraction/experiments package."""
