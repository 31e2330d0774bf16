"""ddpm_lite: a conditional DDPM with classifier-free guidance on MNIST, built chapter by chapter.

The modules that carry the maths are exported from the book's notebooks (`notebooks/`); the
plumbing (data, config, checkpoints, command line) is written by hand. Import what you need:

    from ddpm_lite.forward import make_schedule, q_sample
"""
__version__ = "0.1.0"
