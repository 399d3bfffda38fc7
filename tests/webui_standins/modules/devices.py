import torch

device = torch.device("cpu")
dtype = torch.float32  # the WebUI's with --no-half / on the CPU
