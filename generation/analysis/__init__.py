"""Tempo, downbeat and key of music: what loops are cut on and what MIDI is quantised and labelled with."""
