"""VSG and SVSG: sparsely gated latent dynamics (Jain et al. 2022) inside the DreamerV3 agent."""
