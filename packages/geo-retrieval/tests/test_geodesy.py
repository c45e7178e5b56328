"""geo_retrieval.geodesy: the Earth radii, haversine, VIGOR's great-circle distance and the local
equirectangular projection, pinned against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo_retrieval.geodesy import (
    EARTH_RADIUS_M,
    VIGOR_EARTH_RADIUS_M,
    equirectangular_to_latlon,
    great_circle_distance,
    haversine_distance,
    latlon_to_equirectangular,
)


def _haversine(a, b, r=VIGOR_EARTH_RADIUS_M):
    """Numpy reference: the haversine formula, elementwise."""
    a, b = np.deg2rad(np.asarray(a, float)), np.deg2rad(np.asarray(b, float))
    dlat, dlon = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(a[..., 0]) * np.cos(b[..., 0]) * np.sin(dlon / 2) ** 2
    return 2 * r * np.arcsin(np.sqrt(h))


class TestRadii:
    def test_values(self):
        # IUGG mean radius; VIGOR's gps2distance radius (metre-level evaluation)
        assert EARTH_RADIUS_M == 6_371_008.8
        assert VIGOR_EARTH_RADIUS_M == 6_371_004.0


class TestHaversineDistance:
    def test_one_degree_of_meridian(self):
        # by hand: one degree of arc is R * pi / 180 = 6,371,008.8 * 0.0174532925... = 111,195.080 m
        d = haversine_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
        assert d.dtype == torch.float64 and d.shape == (1, 1)
        assert float(d) == pytest.approx(111_195.08023353292, abs=1e-6)

    def test_one_degree_of_longitude_at_60n(self):
        # by hand: h = cos^2(60) sin^2(0.5 deg) = 0.25 sin^2(0.5 deg), d = 2 R asin(0.5 sin(0.5 deg))
        # = 55,597.011 m (about half a degree of meridian, as cos 60 = 1/2)
        d = haversine_distance(torch.tensor([[60.0, 0.0]]), torch.tensor([[60.0, 1.0]]))
        assert float(d) == pytest.approx(55_597.01086489692, abs=1e-6)

    def test_radius_and_pairs(self):
        a = torch.tensor([[0.0, 0.0], [10.0, 20.0]])
        b = torch.tensor([[0.0, 90.0], [10.0, 20.0], [-10.0, 20.0]])
        d = haversine_distance(a, b, radius=1.0)
        assert d.shape == (2, 3)
        assert float(d[0, 0]) == pytest.approx(math.pi / 2)
        assert float(d[1, 1]) == 0.0
        assert float(d[1, 2]) == pytest.approx(math.radians(20.0))

    def test_exception(self):
        with pytest.raises(ValueError, match="latlon_a must be"):
            haversine_distance(torch.zeros(3), torch.zeros(1, 2))


class TestGreatCircle:
    def test_matches_haversine(self):
        rng = np.random.default_rng(0)
        a = np.stack([rng.uniform(-60, 60, 200), rng.uniform(-180, 180, 200)], 1)
        b = a + rng.normal(0, 0.01, a.shape)  # ~1 km apart: the law of cosines is accurate there
        np.testing.assert_allclose(great_circle_distance(a, b), _haversine(a, b), rtol=1e-6)

    def test_agrees_with_haversine_distance(self):
        a = torch.tensor([[48.1, 11.5], [-33.9, 151.2]], dtype=torch.float64)
        b = torch.tensor([[48.2, 11.6], [-33.8, 151.3]], dtype=torch.float64)
        pairwise = haversine_distance(a, b, radius=VIGOR_EARTH_RADIUS_M).diagonal().numpy()
        np.testing.assert_allclose(great_circle_distance(a, b), pairwise, rtol=1e-7)

    def test_known_values_and_clipping(self):
        # the law of cosines in float64 has a floor of about 0.1 m at zero distance (VIGOR's formula)
        assert great_circle_distance([10.0, 20.0], [10.0, 20.0]) < 0.15
        assert great_circle_distance([0.0, 0.0], [0.0, 0.0]) == 0.0
        np.testing.assert_allclose(
            great_circle_distance([0.0, 0.0], [0.0, 180.0]), np.pi * VIGOR_EARTH_RADIUS_M
        )
        # by hand: one degree on the VIGOR sphere = 6,371,004 * pi / 180 = 111,194.996 m
        assert float(great_circle_distance([0.0, 0.0], [1.0, 0.0])) == pytest.approx(
            111_194.9964577288, abs=1e-6
        )
        d = great_circle_distance(torch.tensor([[41.0, -87.0]], dtype=torch.float64), [[41.0, -87.0]])
        assert np.isfinite(d).all() and d.shape == (1,)

    def test_exception(self):
        with pytest.raises(ValueError, match="lat, lon"):
            great_circle_distance([1.0, 2.0, 3.0], [1.0, 2.0])


class TestEquirectangular:
    origin_xy = (500_000.0, 4_400_000.0)
    origin_latlon = (40.0, -105.0)

    def test_origin(self):
        ll = equirectangular_to_latlon(
            torch.tensor([[500_000.0, 4_400_000.0]]), self.origin_xy, self.origin_latlon
        )
        assert ll.dtype == torch.float64
        assert ll.tolist() == [[40.0, -105.0]]

    def test_hand_computed(self):
        # by hand, R = 6,371,004 m: 1 km north is deg(1000 / R) = 0.0089932104 deg of latitude;
        # 1 km east at 40 N is deg(1000 / (R cos 40)) = 0.0117398024 deg of longitude
        xy = torch.tensor([[500_000.0, 4_401_000.0], [501_000.0, 4_400_000.0]])
        ll = equirectangular_to_latlon(xy, self.origin_xy, self.origin_latlon)
        assert ll[0].tolist() == pytest.approx([40.00899321041285, -105.0], abs=1e-12)
        assert ll[1].tolist() == pytest.approx([40.0, -104.98826019757257], abs=1e-12)

    def test_round_trip_and_distance(self):
        xy = torch.tensor([[500_123.5, 4_399_500.25], [502_000.0, 4_401_500.0]], dtype=torch.float64)
        ll = equirectangular_to_latlon(xy, self.origin_xy, self.origin_latlon)
        back = latlon_to_equirectangular(ll, self.origin_xy, self.origin_latlon)
        torch.testing.assert_close(back, xy, rtol=0, atol=1e-6)
        # over a few kilometres the projection's metres agree with the great-circle distance
        origin = torch.tensor([self.origin_latlon], dtype=torch.float64)
        metres = torch.linalg.vector_norm(xy - torch.tensor(self.origin_xy, dtype=torch.float64), dim=1)
        gc = haversine_distance(origin, ll, radius=VIGOR_EARTH_RADIUS_M)[0]
        torch.testing.assert_close(gc, metres, rtol=1e-4, atol=0.0)

    def test_radius(self):
        ll = equirectangular_to_latlon(
            torch.tensor([[0.0, 1.0]]), (0.0, 0.0), (0.0, 0.0), radius_m=180.0 / math.pi
        )
        assert ll[0].tolist() == pytest.approx([1.0, 0.0])
