"""The application's parts on phantom files, without training: what it builds follows from
its arguments, and capabilities are declared, not found by inspection."""

import ast
import pathlib

import nibabel as nib
import numpy as np
import pytest

import sfg_app
from sfg_app import commands
from sfg_app.config import settings_from_dict
from sfg_app.demo.configs import TINY_SHAPE, phantom_sections
from sfg_app.demo.phantoms import write_dataset
from sfg_app.networks.base import SFGNetwork
from sfg_app.registry import NETWORKS

PACKAGE = pathlib.Path(sfg_app.__file__).parent


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    write_dataset(folder / "data", subjects=2, seed=1, shape=TINY_SHAPE)
    return folder


def settings(project, changes=None):
    return settings_from_dict(phantom_sections("run", changes), base_dir=project)


def two_channel_image(project) -> str:
    """A subject's MR with its one channel written twice: an input of 2 channels."""
    source = nib.load(str(sorted((project / "data").glob("*_mr.nii.gz"))[0]))
    data = np.asarray(source.dataobj, np.float32)
    path = project / "twice_mr.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), source.affine), str(path))
    return str(path)


def input_channels(model) -> int:
    """The input channels of the first convolution, the first kernel built."""
    return int(next(v for v in model.weights if v.path.endswith("kernel")).shape[-2])


def test_the_network_takes_the_channels_of_the_inputs_given_whatever_the_order_of_calls(
        project):
    """Regression: `--input` files used to replace the channels of the network only once
    `inference_files` had read them, so a network built first took the data's."""
    config = settings(project)
    inputs = [two_channel_image(project)]
    first_built = commands.make_application(config, inputs)
    assert input_channels(first_built.build_network()) == 2
    first_listed = commands.make_application(config, inputs)
    assert [s.subject_id for s in first_listed.inference_files()] == ["twice"]
    assert input_channels(first_listed.build_network()) == 2
    assert input_channels(commands.make_application(config).build_network()) == 1


def test_the_identity_holds_the_keys_each_task_type_declares(project):
    identity = commands.make_application(settings(project)).network_identity()
    assert identity["TASK synth_ct.target_scale"] == 1000
    assert identity["TASK synth_ct.target_shift"] == 0.0
    assert not [key for key in identity if key.startswith("TASK organs.")
                and key != "TASK organs.type"]
    assert identity["input channels"] == 1
    assert "SFG.connectivity" in identity and "SFG.norm_parameters" in identity
    dense = commands.make_application(settings(project, {"NETWORK": {
        "name": "hard_shared"}})).network_identity()
    assert not [key for key in dense if key.startswith("SFG.")]


@pytest.mark.parametrize("name", NETWORKS.names())
def test_every_network_declares_whether_it_has_sfg_layers(name):
    network_class = NETWORKS.get(name)
    assert network_class.is_sfg is issubclass(network_class, SFGNetwork)


@pytest.mark.parametrize("folder", ["application", "engine"])
def test_no_capability_is_found_by_inspection(folder):
    """Capabilities are declared (class attributes, base methods, application hooks):
    never read from `hasattr` or a constructor's signature."""
    for path in sorted((PACKAGE / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                assert called not in ("hasattr", "inspect.signature"), \
                    f"{path.name}:{node.lineno} calls {called}"
