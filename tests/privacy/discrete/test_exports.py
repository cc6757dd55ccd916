import fedpriv.privacy as privacy
import fedpriv.privacy.discrete as discrete


def test_every_exported_name_exists():
    assert len(discrete.__all__) == len(set(discrete.__all__))
    for name in discrete.__all__:
        assert hasattr(discrete, name), name
    assert "DistributedNoiseEvent" in privacy.__all__
    assert privacy.DistributedNoiseEvent is discrete.rdp.DistributedNoiseEvent
