"""Latin-square (KenKen solution grid) components: generator, task ``latin_grid``, model ``grid_transformer``."""
