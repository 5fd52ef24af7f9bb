// placeholder: written by the CUDA backend work
