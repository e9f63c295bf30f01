"""The demo's synthetic FIB-SEM volumes with known truth (synth), the hard films and random
families built on them (films), and a held-out simulator of particle packings that is never
used for choices, only to check them (spheres)."""
