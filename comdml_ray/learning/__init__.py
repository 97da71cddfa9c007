"""Deep learning in pure torch: models, data, training steps, smashed data, leakage, split costs (no Ray).

Owns
- `models`: split-able models (the CNN, ResNet-56/110) with prefixes, suffixes and aux heads;
- `data`: the datasets as uint8 arrays and their IID / Dirichlet partitions over agents;
- `training`: whole-model epochs, local-loss split training, evaluation, the SGD step;
- `smashed`: the activations an offloader sends, protected and encoded;
- `leakage`: how much of an input a helper can recover from what it receives;
- `costmodel`: what one batch costs on each side of every split (the split profile).

May import: `comdml_ray.config`, `solvers`, torch, torchvision, numpy, pandas
(the rule: `comdml_ray.LAYERS`).
"""
