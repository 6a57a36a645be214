"""The research pipeline on top of the library: the LIPS loop (`loop`) and its sweeps (`sweep`), the notebook
runner (`notebooks`), DVCLive tracking, the replay of the authors' logs, the benchmark, the video comparison and
the figures (`plots`)."""
