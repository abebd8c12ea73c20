"""Binarized networks (issue 14): the exact integer form and its forward pass (`network`), Keras training and
the fold into integer thresholds (`keras_model`, the only module here that imports Keras), the encoding-neutral
question over flipped input bits (`query`), and its MIP / IP (`milp`) and CNF (`cnf`) encodings; `verify` answers
the questions of binary.py.
"""
