"""The demo's synthetic FIB-SEM volumes with known truth (synth)."""
