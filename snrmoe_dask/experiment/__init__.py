"""The experiment driver: the YAML config of LOGG-SNR-ORACLE-01, its translation into one pass of
the engine, the solves, the test-set evaluation with its decision, and the results folder (written
atomically). The config object stops here: nothing below this package knows it exists.
"""
