"""The one registry type and the one missing-dependency error of the toolkit."""

from __future__ import annotations

import pytest

import geo_transforms
from geo_transforms import MissingDependencyError, Registry, import_optional


class TestRegistry:
    def test_smoke(self):
        reg = Registry[int]("thing")
        assert reg.register("a", 1) == 1
        assert reg.get("a") == 1 and "a" in reg and len(reg) == 1 and list(reg) == ["a"]
        assert repr(reg) == "Registry('thing', 1 entries)"

    def test_decorator(self):
        reg = Registry[type]("head")

        @reg.register("gem")
        class GeM:
            pass

        assert reg.get("gem") is GeM

    def test_duplicate_raises_unless_overwrite(self):
        reg = Registry[int]("loss")
        reg.register("a", 1)
        with pytest.raises(
            ValueError, match=r"loss 'a' is already registered; pass overwrite=True to replace it"
        ):
            reg.register("a", 1)  # even the same entry: one policy, no silent no-op
        with pytest.raises(ValueError, match="already registered"):
            reg.register("a")(2)
        assert reg.register("a", 2, overwrite=True) == 2 and reg.get("a") == 2

    def test_unknown_lists_available(self):
        reg = Registry[int]("backbone")
        reg.register("b", 1)
        reg.register("a", 2)
        with pytest.raises(ValueError, match=r"unknown backbone 'c'; available: \['a', 'b'\]"):
            reg.get("c")
        with pytest.raises(ValueError, match=r"unknown backbone 'c'"):
            reg.unregister("c")
        assert reg.unregister("a") == 2 and reg.names() == ["b"]

    def test_exception(self):
        reg = Registry[int]("head")
        with pytest.raises(TypeError, match="head name must be a non-empty str"):
            reg.register("", 1)
        with pytest.raises(TypeError, match="head name must be a non-empty str"):
            reg.register(3, 1)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="head name must be a str"):
            reg.get(3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="must not contain"):
            reg.register("gem*", 1)
        with pytest.raises(TypeError, match="kind"):
            Registry("")

    def test_patterns_and_filter(self):
        reg = Registry[str]("backbone", patterns=True)
        reg.register("convnext_*", "pattern")
        reg.register("convnext_atto", "exact")
        reg.register("vit_*", "vit")
        assert reg.get("convnext_atto") == "exact"  # exact names win
        assert reg.get("convnext_base") == "pattern"
        assert "vit_small" in reg and "resnet" not in reg and reg.find("resnet") is None
        assert reg.names("convnext*") == ["convnext_*", "convnext_atto"]
        assert [name for name, _ in reg.items()] == ["convnext_*", "convnext_atto", "vit_*"]

    def test_presets_use_the_registry(self):
        from geo_transforms import presets

        assert isinstance(presets._PRESETS, Registry)
        assert geo_transforms.list_polar_presets("safa@*") == ["safa@1"]


class TestMissingDependencyError:
    def test_is_import_error_with_extra(self):
        with pytest.raises(
            ImportError, match=r"maps needs no_such_module_xyz: pip install 'geo-bench\[map\]'"
        ) as info:
            import_optional("no_such_module_xyz.sub", extra="geo-bench[map]", purpose="maps")
        assert isinstance(info.value, MissingDependencyError)
        assert info.value.extra == "geo-bench[map]" and info.value.name == "no_such_module_xyz.sub"

    def test_hint_and_success(self):
        with pytest.raises(MissingDependencyError, match=r"\[faiss\]' \(never both\)$"):
            import_optional(
                "no_such_module_xyz", extra="geo-retrieval[faiss]", purpose="search", hint="(never both)"
            )
        assert import_optional("math", extra="x[y]", purpose="z").sqrt(4.0) == 2.0

    def test_preview_raises_it(self, monkeypatch):
        import sys

        from geo_transforms import preview

        monkeypatch.setitem(sys.modules, "PIL", None)
        with pytest.raises(MissingDependencyError, match=r"geo-transforms\[preview\]"):
            preview._pil()
