"""Pushed samples: the stream that carries them (`stream`), the formats they come in (`formats`), the relay."""
