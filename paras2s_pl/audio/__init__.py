"""Audio backends: TTS, ASR, style captioners, codecs, and audio I/O."""
