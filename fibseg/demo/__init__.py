"""The demo's synthetic FIB-SEM volumes with known truth (synth), and the hard films and
random families built on them (films)."""
