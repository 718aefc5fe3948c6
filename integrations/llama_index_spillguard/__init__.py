"""LlamaIndex integration of spillguard (``pip install "spillguard[llamaindex]"``)."""
