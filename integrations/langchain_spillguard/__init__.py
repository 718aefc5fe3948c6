"""LangChain integration of spillguard (``pip install "spillguard[langchain]"``)."""
