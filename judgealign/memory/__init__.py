"""MemAlign's memories: semantic (guidelines with provenance) and episodic (Chroma examples)."""
