"""Low-dimensional manifolds embedded in R^d by a random isometry: the data of the manifold experiments.

Score-Based Generative Models Detect Manifolds (J. Pidstrigach, arXiv 2206.01018) proves that an SGM whose score has
finite error energy puts its samples on the support M of the data; these classes give M in closed form (sampling,
distance to M, intrinsic dimension) so that the claim can be measured. Each manifold lives in R^m (m = 2, 3 or 4) and
is mapped into R^d by x = Q u with Q `(d, m)` orthonormal columns drawn from `seed` (QR of a Gaussian matrix), so that
||x - Q Q^T x|| is the distance to the embedding space and the in-space distance is that of the model manifold
(digest B3).

Sampling is uniform in the Riemannian volume (the 3-D torus by vectorised rejection on its tube angle).
"""

from __future__ import annotations

import math

import torch


def random_isometry(ambient_dim: int, embedding_dim: int, seed: int = 0) -> torch.Tensor:
    """Q `(ambient_dim, embedding_dim)` with orthonormal columns, from the QR decomposition of a seeded Gaussian."""
    if embedding_dim > ambient_dim:
        raise ValueError(
            f"`ambient_dim` ({ambient_dim}) must be >= the manifold's embedding dimension ({embedding_dim})."
        )
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(ambient_dim, embedding_dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r))  # unique: positive diagonal of R


class EmbeddedManifold:
    """A compact manifold M in R^m, embedded in R^d by the isometry Q.

    Args:
        ambient_dim: d.
        seed: seed of the random isometry.
    """

    embedding_dim: int = 0
    intrinsic_dim: int = 0

    def __init__(self, ambient_dim: int, seed: int = 0) -> None:
        self.ambient_dim = ambient_dim
        self.isometry = random_isometry(ambient_dim, self.embedding_dim, seed)  # Q: (d, m), float64

    def embed(self, coordinates: torch.Tensor) -> torch.Tensor:
        """R^m points `(n, m)` -> R^d points `(n, d)`."""
        return coordinates @ self.isometry.to(coordinates).T

    def in_space(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(u, off)`: coordinates Q^T x `(n, m)` and the squared distance `(n,)` to the embedding space."""
        isometry = self.isometry.to(points)
        coordinates = points @ isometry  # (n, m)
        off_space = (points - coordinates @ isometry.T).pow(2).sum(-1)
        return coordinates, off_space

    def sample_coordinates(self, num_points: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self, num_points: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """`num_points` points of M, uniform in its volume, `(n, d)`."""
        return self.embed(self.sample_coordinates(num_points, generator)).to(dtype)

    def squared_in_space_distance(self, coordinates: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def distance(self, points: torch.Tensor) -> torch.Tensor:
        """Euclidean distance `(n,)` of `points` `(n, d)` to M."""
        coordinates, off_space = self.in_space(points)
        return (off_space + self.squared_in_space_distance(coordinates)).clamp_min(0).sqrt()


class Sphere(EmbeddedManifold):
    """The k-sphere of radius R in R^(k+1): dist^2 = ||x - Q Q^T x||^2 + (||Q^T x|| - R)^2.

    Args:
        k: intrinsic dimension (1: a circle).
        ambient_dim: d >= k + 1.
        radius: R.
        seed: seed of the isometry.
    """

    def __init__(self, k: int, ambient_dim: int, radius: float = 1.0, seed: int = 0) -> None:
        if k < 1:
            raise ValueError(f"`k` must be >= 1, got {k}.")
        self.embedding_dim, self.intrinsic_dim, self.radius = k + 1, k, radius
        super().__init__(ambient_dim, seed)

    def sample_coordinates(self, num_points: int, generator: torch.Generator | None = None) -> torch.Tensor:
        gaussian = torch.randn(num_points, self.embedding_dim, generator=generator, dtype=torch.float64)
        return self.radius * gaussian / gaussian.norm(dim=-1, keepdim=True)

    def squared_in_space_distance(self, coordinates: torch.Tensor) -> torch.Tensor:
        return (coordinates.norm(dim=-1) - self.radius).pow(2)


class Circle(Sphere):
    """The circle of radius R (a 1-sphere), with its angle coordinate."""

    def __init__(self, ambient_dim: int, radius: float = 1.0, seed: int = 0) -> None:
        super().__init__(1, ambient_dim, radius, seed)

    def angles(self, points: torch.Tensor) -> torch.Tensor:
        """Angle in [-pi, pi) of the projection of `points` `(n, d)` on the circle's plane: `(n,)`."""
        coordinates, _ = self.in_space(points)
        return torch.atan2(coordinates[:, 1], coordinates[:, 0])


class FlatTorus(EmbeddedManifold):
    """The flat torus S^1(R1) x S^1(R2) in R^4 (two circles in orthogonal planes):
    dist^2 = off-space + (||u_12|| - R1)^2 + (||u_34|| - R2)^2.
    """

    embedding_dim, intrinsic_dim = 4, 2

    def __init__(self, ambient_dim: int, radii: tuple[float, float] = (1.0, 1.0), seed: int = 0) -> None:
        self.radii = radii
        super().__init__(ambient_dim, seed)

    def sample_coordinates(self, num_points: int, generator: torch.Generator | None = None) -> torch.Tensor:
        angles = 2 * math.pi * torch.rand(num_points, 2, generator=generator, dtype=torch.float64)
        first = self.radii[0] * torch.stack([angles[:, 0].cos(), angles[:, 0].sin()], dim=-1)
        second = self.radii[1] * torch.stack([angles[:, 1].cos(), angles[:, 1].sin()], dim=-1)
        return torch.cat([first, second], dim=-1)  # (n, 4)

    def squared_in_space_distance(self, coordinates: torch.Tensor) -> torch.Tensor:
        first = (coordinates[:, :2].norm(dim=-1) - self.radii[0]).pow(2)
        second = (coordinates[:, 2:].norm(dim=-1) - self.radii[1]).pow(2)
        return first + second


class Torus3D(EmbeddedManifold):
    """The standard torus in R^3 with major radius R and minor radius r < R: with rho = ||u_12||,
    dist^2 = off-space + (sqrt((rho - R)^2 + u_3^2) - r)^2.
    """

    embedding_dim, intrinsic_dim = 3, 2

    def __init__(self, ambient_dim: int, major_radius: float = 1.0, minor_radius: float = 0.4, seed: int = 0) -> None:
        if not 0 < minor_radius < major_radius:
            raise ValueError(f"need 0 < `minor_radius` < `major_radius`, got {minor_radius} and {major_radius}.")
        self.major_radius, self.minor_radius = major_radius, minor_radius
        super().__init__(ambient_dim, seed)

    def sample_coordinates(self, num_points: int, generator: torch.Generator | None = None) -> torch.Tensor:
        big, small = self.major_radius, self.minor_radius
        tube_angles = torch.empty(0, dtype=torch.float64)
        while tube_angles.numel() < num_points:  # rejection rounds (a few), vectorised within each
            candidates = 2 * math.pi * torch.rand(2 * num_points, generator=generator, dtype=torch.float64)
            accept = torch.rand(2 * num_points, generator=generator, dtype=torch.float64)
            keep = accept * (big + small) < big + small * candidates.cos()  # area element (R + r cos theta)
            tube_angles = torch.cat([tube_angles, candidates[keep]])
        tube_angles = tube_angles[:num_points]
        ring_angles = 2 * math.pi * torch.rand(num_points, generator=generator, dtype=torch.float64)
        rho = big + small * tube_angles.cos()
        return torch.stack([rho * ring_angles.cos(), rho * ring_angles.sin(), small * tube_angles.sin()], dim=-1)

    def squared_in_space_distance(self, coordinates: torch.Tensor) -> torch.Tensor:
        rho = coordinates[:, :2].norm(dim=-1)
        return (torch.sqrt((rho - self.major_radius).pow(2) + coordinates[:, 2].pow(2)) - self.minor_radius).pow(2)


__all__ = ["Circle", "EmbeddedManifold", "FlatTorus", "Sphere", "Torus3D", "random_isometry"]
