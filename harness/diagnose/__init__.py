"""--diagnose K: the first K training steps on both sides, every layer compared, the first place the twins part."""
