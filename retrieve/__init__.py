"""Search stage: XTR token retrieval, missing-similarity imputation, exact MaxSim rerank."""
