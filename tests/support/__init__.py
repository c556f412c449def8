"""What the tests share and do not test themselves: real Flower runs (a SuperLink and `flwr run`, an in-process
grid), strategy runs, and generators of small files in each dataset's official layout."""
