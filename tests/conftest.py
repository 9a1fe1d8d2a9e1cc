"""Shared fixtures: `isa` runs a test once per kernel path this CPU supports, forcing it."""
import numpy as np
import pytest

from cromwell_lsp import kernels


@pytest.fixture(params=list(kernels.ISAS))
def isa(request):
    name = request.param
    if not kernels.isa_supported(name):
        pytest.skip(f"this CPU cannot run the {name} kernels")
    before = kernels.isa()
    kernels.set_isa(name)
    yield name
    kernels.set_isa(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_err(got, ref, scale=None):
    """max |got - ref| / max(|scale|, tiny), scale = ref unless given: the error measure
    every kernel test states.  The property tests pass as scale the same computation on
    absolute values (sum |terms|, which bounds fp32 rounding): a single drawn output whose
    terms cancel would otherwise make the measure report the cancellation, not the kernel."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ref.size == 0:
        return 0.0
    scale = ref if scale is None else np.asarray(scale, dtype=np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(scale)), 1e-30))


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory):
    """A real 600-token BPE trained (in a few seconds) on the stdlib json and email packages
    and one file that spells a special token, with a quarter of the files held out for
    validation; returns (Tokenizer, training report)."""
    from cromwell_lsp.model.tokenizer import Tokenizer
    from cromwell_lsp.training import corpus, tokenizer
    from tests.test_corpus import GOOD

    root = tmp_path_factory.mktemp("tok")
    src = corpus.stdlib_source()
    src.files = [f for f in src.files if f[1] and f[0].startswith(("stdlib/json/", "stdlib/email/"))]
    src.files.append(("stdlib/fake.py", 'SENTINEL = "<|endoftext|>"\n' + GOOD))
    corpus.build(root / "corpus", sources=[src], log=lambda *a: None, val_fraction=0.25)
    report = tokenizer.train(root / "corpus", root / "tokenizer.json", vocab_size=600,
                             log=lambda *a: None)
    return Tokenizer(root / "tokenizer.json"), report


@pytest.fixture(scope="session")
def twenty_step_run(small_tokenizer, tmp_path_factory):
    """The run folder of a 20-step `tiny` training on the small tokenizer's corpus (text
    steps only), shared by the tests that export or edit a trained checkpoint and only
    read it."""
    from cromwell_lsp.training.train import Trainer
    from tests.test_training import _config, _quiet

    tok, _ = small_tokenizer
    run = tmp_path_factory.mktemp("twenty") / "run"
    Trainer(_config(run, tok, steps=20, image_every=0, ckpt_every=20), log=_quiet).run()
    return run


@pytest.fixture(scope="module")
def one_kernel_thread():
    """Model tests of a module run the kernels on one thread (the machine's other core
    stays free for the server subprocesses they start), then restore the count."""
    before = kernels.threads()
    kernels.set_threads(1)
    yield
    kernels.set_threads(before)
