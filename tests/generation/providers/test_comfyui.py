from __future__ import annotations

import hashlib

import pytest
import requests
import responses
from responses import matchers

from generation.providers.base import GenerationRequest, ProviderError, Reference, ResultStatus
from generation.providers.comfyui import ComfyUI
from tests.generation.providers import PNG, api_model, sent_json

BASE = "http://10.0.0.5:8188"
PROMPT_ID = "6b1c2d3e-0f4a-4b5c-9d8e-7f6a5b4c3d2e"
REQUEST_ID = "c0ffee00-1111-2222-3333-444455556666"
QUEUED = {"prompt_id": PROMPT_ID, "number": 3, "node_errors": {}}


def model():
    return api_model("sdxl_base_1.0.safetensors", "comfyui", tasks=["t2i", "i2i"])


def history(outputs: dict, status_str: str = "success", messages: list | None = None) -> dict:
    return {
        PROMPT_ID: {
            "prompt": [3, PROMPT_ID, {}, {"client_id": REQUEST_ID}, ["9"]],
            "outputs": outputs,
            "status": {"status_str": status_str, "completed": status_str == "success", "messages": messages or []},
            "meta": {},
        }
    }


@pytest.fixture(autouse=True)
def _comfyui_settings(settings):
    settings.COMFYUI_BASE_URL = BASE + "/"


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


class TestComfyUISubmit:
    def test_it_queues_a_text_to_image_graph_with_a_batch(self, rsps):
        rsps.post(f"{BASE}/prompt", json=QUEUED)
        request = GenerationRequest(
            prompt="portrait of a knight",
            negative_prompt="blurry",
            num_images=3,
            seed=1234,
            request_id=REQUEST_ID,
            params={"checkpoint": "dreamshaper_8.safetensors", "image_size": "portrait_4_3", "steps": 25},
        )
        result = ComfyUI(model()).submit(request)

        call = rsps.calls[0]
        assert (call.request.method, call.request.url) == ("POST", f"{BASE}/prompt")
        assert "Authorization" not in call.request.headers
        body = sent_json(call)
        assert body["client_id"] == REQUEST_ID
        assert body["prompt"] == {
            "3": {
                "class_type": "KSampler",
                "inputs": {
                    "seed": 1234,
                    "steps": 25,
                    "cfg": 7.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "denoise": 1.0,
                    "model": ["4", 0],
                    "positive": ["6", 0],
                    "negative": ["7", 0],
                    "latent_image": ["5", 0],
                },
            },
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "dreamshaper_8.safetensors"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 768, "height": 1024, "batch_size": 3}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "portrait of a knight", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "charstudio", "images": ["8", 0]}},
        }
        assert result.status == ResultStatus.PENDING
        assert result.external_id == PROMPT_ID
        assert result.handles == {"client_id": REQUEST_ID, "seed": 1234}

    def test_it_uses_the_model_key_as_checkpoint_and_picks_a_seed(self, rsps):
        rsps.post(f"{BASE}/prompt", json=QUEUED)
        result = ComfyUI(model()).submit(GenerationRequest(prompt="p"))
        graph = sent_json(rsps.calls[0])["prompt"]
        assert graph["4"]["inputs"]["ckpt_name"] == "sdxl_base_1.0.safetensors"
        # Identical graphs are served from ComfyUI's cache, so an unseeded request gets a fresh seed.
        assert graph["3"]["inputs"]["seed"] == result.handles["seed"]
        assert isinstance(result.handles["seed"], int)

    def test_it_uploads_the_reference_for_image_to_image(self, rsps):
        digest = hashlib.sha256(PNG).hexdigest()[:32]
        rsps.post(f"{BASE}/upload/image", json={"name": f"charstudio-{digest}.png", "subfolder": "", "type": "input"})
        rsps.post(f"{BASE}/prompt", json=QUEUED)
        references = [Reference(data=PNG, content_type="image/png", key="refs/a.png")] * 2
        request = GenerationRequest(prompt="p", num_images=2, strength=0.45, seed=5, references=references)
        ComfyUI(model()).submit(request)

        upload = rsps.calls[0].request
        assert upload.headers["Content-Type"].startswith("multipart/form-data")
        assert b'name="image"; filename="charstudio-' + digest.encode() + b'.png"' in upload.body
        assert b'name="overwrite"\r\n\r\ntrue' in upload.body
        assert PNG in upload.body
        graph = sent_json(rsps.calls[1])["prompt"]
        assert "5" not in graph
        assert graph["10"] == {"class_type": "LoadImage", "inputs": {"image": f"charstudio-{digest}.png"}}
        assert graph["11"] == {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        assert graph["12"] == {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["11", 0], "amount": 2}}
        assert graph["3"]["inputs"]["latent_image"] == ["12", 0]
        assert graph["3"]["inputs"]["denoise"] == 0.45
        assert len(rsps.calls) == 2  # the duplicate reference is not uploaded twice

    def test_it_loads_an_upload_from_its_subfolder(self, rsps):
        rsps.post(f"{BASE}/upload/image", json={"name": "cat (1).png", "subfolder": "refs", "type": "input"})
        rsps.post(f"{BASE}/prompt", json=QUEUED)
        ComfyUI(model()).submit(GenerationRequest(prompt="p", references=[Reference(PNG, "image/png")]))
        graph = sent_json(rsps.calls[1])["prompt"]
        assert graph["10"]["inputs"]["image"] == "refs/cat (1).png"
        assert graph["3"]["inputs"]["latent_image"] == ["11", 0]

    def test_it_reports_node_errors_permanently(self, rsps):
        rejected = {
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            },
            "node_errors": {
                "4": {
                    "errors": [
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": "ckpt_name: 'missing.safetensors' not in ['v1-5.safetensors']",
                            "extra_info": {},
                        }
                    ],
                    "dependent_outputs": ["9"],
                    "class_type": "CheckpointLoaderSimple",
                }
            },
        }
        rsps.post(f"{BASE}/prompt", json=rejected, status=400)
        with pytest.raises(ProviderError) as info:
            ComfyUI(model()).submit(GenerationRequest(prompt="p", params={"checkpoint": "missing.safetensors"}))
        assert info.value.permanent
        assert info.value.message == (
            "ComfyUI answered HTTP 400: Prompt outputs failed validation: CheckpointLoaderSimple #4: "
            "ckpt_name: 'missing.safetensors' not in ['v1-5.safetensors']"
        )

    def test_it_withdraws_a_prompt_queued_with_node_errors(self, rsps):
        node_errors = {"7": {"errors": [{"type": "x", "message": "bad text"}], "class_type": "CLIPTextEncode"}}
        rsps.post(f"{BASE}/prompt", json={"prompt_id": PROMPT_ID, "number": 4, "node_errors": node_errors})
        rsps.post(f"{BASE}/queue", body="", match=[matchers.json_params_matcher({"delete": [PROMPT_ID]})])
        rsps.get(f"{BASE}/queue", json={"queue_running": [], "queue_pending": []})
        with pytest.raises(ProviderError) as info:
            ComfyUI(model()).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert info.value.message == "ComfyUI rejected the graph: CLIPTextEncode #7: bad text"

    def test_it_refuses_bad_parameters_before_queueing(self, rsps):
        with pytest.raises(ProviderError) as info:
            ComfyUI(model()).submit(GenerationRequest(prompt="p", params={"steps": "many"}))
        assert info.value.permanent


class TestComfyUIPoll:
    def test_it_waits_for_history_then_downloads_the_images(self, rsps):
        outputs = {
            "9": {
                "images": [
                    {"filename": "charstudio_00001_.png", "subfolder": "", "type": "output"},
                    {"filename": "charstudio_00002_.png", "subfolder": "", "type": "output"},
                    {"filename": "preview_00001_.png", "subfolder": "", "type": "temp"},
                ]
            }
        }
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json={})
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history(outputs))
        for name in ("charstudio_00001_.png", "charstudio_00002_.png"):
            rsps.get(
                f"{BASE}/view",
                body=PNG,
                content_type="image/png",
                match=[matchers.query_param_matcher({"filename": name, "subfolder": "", "type": "output"})],
            )
        comfy = ComfyUI(model())
        request = GenerationRequest(prompt="p", num_images=2)
        handles = {"client_id": REQUEST_ID, "seed": 99}

        pending = comfy.poll(request, PROMPT_ID, handles)
        done = comfy.poll(request, PROMPT_ID, handles)

        assert pending.status == ResultStatus.PENDING
        assert pending.poll_after == pytest.approx(1.0)
        assert done.status == ResultStatus.SUCCEEDED
        assert [image.data for image in done.images] == [PNG, PNG]
        assert [image.metadata["filename"] for image in done.images] == [
            "charstudio_00001_.png",
            "charstudio_00002_.png",
        ]
        assert all(image.content_type == "image/png" and image.seed == 99 for image in done.images)
        assert rsps.calls[2].request.url == f"{BASE}/view?filename=charstudio_00001_.png&subfolder=&type=output"

    def test_it_reports_an_execution_error(self, rsps):
        messages = [
            ["execution_start", {"prompt_id": PROMPT_ID, "timestamp": 1}],
            [
                "execution_error",
                {
                    "prompt_id": PROMPT_ID,
                    "node_id": "10",
                    "node_type": "LoadImage",
                    "exception_message": "cannot identify image file 'input/charstudio-x.png'",
                    "exception_type": "PIL.UnidentifiedImageError",
                    "traceback": [],
                },
            ],
        ]
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history({}, "error", messages))
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {})
        assert result.status == ResultStatus.FAILED
        assert result.permanent
        assert result.error == "ComfyUI failed in LoadImage: cannot identify image file 'input/charstudio-x.png'"

    def test_it_reports_an_interrupted_run_as_canceled(self, rsps):
        messages = [["execution_interrupted", {"prompt_id": PROMPT_ID, "node_id": "3", "node_type": "KSampler"}]]
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history({}, "error", messages))
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {})
        assert result.status == ResultStatus.CANCELED

    def test_it_fails_a_success_without_images(self, rsps):
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history({}))
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {})
        assert result.status == ResultStatus.FAILED


class TestComfyUICancel:
    def test_it_deletes_from_the_queue_and_interrupts_only_its_own_run(self, rsps):
        rsps.post(f"{BASE}/queue", body="", match=[matchers.json_params_matcher({"delete": [PROMPT_ID]})])
        rsps.get(f"{BASE}/queue", json={"queue_running": [[3, PROMPT_ID, {}, {}, ["9"]]], "queue_pending": []})
        rsps.post(f"{BASE}/interrupt", body="", match=[matchers.json_params_matcher({"prompt_id": PROMPT_ID})])
        ComfyUI(model()).cancel(PROMPT_ID, {})
        assert [call.request.method for call in rsps.calls] == ["POST", "GET", "POST"]

    def test_it_leaves_someone_elses_run_alone(self, rsps):
        rsps.post(f"{BASE}/queue", body="")
        rsps.get(f"{BASE}/queue", json={"queue_running": [[2, "other-prompt", {}, {}, ["9"]]], "queue_pending": []})
        ComfyUI(model()).cancel(PROMPT_ID, {})
        assert len(rsps.calls) == 2


class TestComfyUIConfiguration:
    def test_it_needs_a_base_url(self, settings):
        comfy = ComfyUI(model())
        assert comfy.is_configured()
        settings.COMFYUI_BASE_URL = ""
        assert not comfy.is_configured()
        assert not comfy.health_check()
        assert "COMFYUI_BASE_URL" in comfy.configuration_hint()

    def test_it_probes_the_server_for_health(self, rsps):
        rsps.get(f"{BASE}/prompt", json={"exec_info": {"queue_remaining": 0}})
        rsps.get(f"{BASE}/prompt", body=requests.ConnectionError("refused"))
        comfy = ComfyUI(model())
        assert comfy.health_check()
        assert not comfy.health_check()
