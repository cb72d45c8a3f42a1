"""rlvr_exp."""
