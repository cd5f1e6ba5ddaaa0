"""Pseudo-pathology generators: Perlin and simplex noise, fluid-driven lesions."""
