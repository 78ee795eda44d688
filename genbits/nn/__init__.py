"""The deep learning bits as small modules, chosen by constructor arguments."""
