"""MIDI from audio: stems, drum hits, pitched notes by basic-pitch, and the MIDI files and pack."""
