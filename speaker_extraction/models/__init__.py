"""speaker_extraction/models package."""
