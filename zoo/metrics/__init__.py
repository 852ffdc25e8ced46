"""Sample-quality metrics for the image models (gan, vae, later pixelcnn and diffusion).

- `classifier`: a small CNN per image dataset, trained by the zoo and kept in
  `exports/classifiers/<dataset>/`; its penultimate features are the FID features.
- `fid`: Fréchet distance between feature sets, in numpy.
"""
