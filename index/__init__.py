"""Index stage: immutable Arrow + FAISS segments under an atomically replaced manifest."""
