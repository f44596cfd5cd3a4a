from __future__ import annotations

import hashlib

import pytest
import requests
import responses
from django.core.exceptions import ValidationError
from responses import matchers

from generation.providers.base import GenerationRequest, ProviderError, Reference, ResultStatus
from generation.providers.comfyui import ComfyUI
from tests.generation.providers import PNG, api_model, sent_json

BASE = "http://10.0.0.5:8188"
PROMPT_ID = "6b1c2d3e-0f4a-4b5c-9d8e-7f6a5b4c3d2e"
REQUEST_ID = "c0ffee00-1111-2222-3333-444455556666"
QUEUED = {"prompt_id": PROMPT_ID, "number": 3, "node_errors": {}}


GRAPH = {
    "checkpoint": "dreamshaper_8.safetensors",
    "steps": 25,
    "cfg": 6.5,
    "sampler": "dpmpp_2m",
    "scheduler": "karras",
    "width": 832,
    "height": 1216,
}


def model(**graph):
    return api_model(
        "comfyui/dreamshaper", "comfyui", tasks=["t2i", "i2i"], capabilities={"comfyui": {**GRAPH, **graph}}
    )


def queue(*running_ids: str, pending: tuple[str, ...] = ()) -> dict:
    """GET /queue as the server answers: items are [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
    item = lambda number, prompt_id: [number, prompt_id, {}, {"client_id": REQUEST_ID}, ["9"]]  # noqa: E731
    return {
        "queue_running": [item(n, p) for n, p in enumerate(running_ids, start=1)],
        "queue_pending": [item(n, p) for n, p in enumerate(pending, start=10)],
    }


def view(rsps, name: str) -> None:
    rsps.get(
        f"{BASE}/view",
        body=PNG,
        content_type="image/png",
        match=[matchers.query_param_matcher({"filename": name, "subfolder": "", "type": "output"})],
    )


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
            # Sampling settings in params are not the user's to choose: the registry row's win.
            params={"checkpoint": "other.safetensors", "image_size": "portrait_4_3", "steps": 1, "cfg": 30},
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
                    "cfg": 6.5,
                    "sampler_name": "dpmpp_2m",
                    "scheduler": "karras",
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

    def test_it_takes_the_default_size_from_the_row_and_picks_a_seed(self, rsps):
        rsps.post(f"{BASE}/prompt", json=QUEUED)
        result = ComfyUI(model()).submit(GenerationRequest(prompt="p"))
        graph = sent_json(rsps.calls[0])["prompt"]
        assert graph["5"]["inputs"] == {"width": 832, "height": 1216, "batch_size": 1}
        # Identical graphs are served from ComfyUI's cache, so an unseeded request gets a fresh seed.
        assert graph["3"]["inputs"]["seed"] == result.handles["seed"]
        assert isinstance(result.handles["seed"], int)

    def test_it_rounds_sizes_to_the_rows_multiple(self, rsps):
        rsps.post(f"{BASE}/prompt", json=QUEUED)
        request = GenerationRequest(prompt="p", params={"image_size": {"width": 1000, "height": 700}})
        ComfyUI(model(size_multiple=64)).submit(request)
        assert sent_json(rsps.calls[0])["prompt"]["5"]["inputs"] == {"width": 1024, "height": 704, "batch_size": 1}

    def test_it_rounds_sizes_to_a_multiple_of_8_by_default(self, rsps):
        rsps.post(f"{BASE}/prompt", json=QUEUED)
        request = GenerationRequest(prompt="p", params={"width": 1001, "height": 515})
        ComfyUI(model()).submit(request)
        assert sent_json(rsps.calls[0])["prompt"]["5"]["inputs"] == {"width": 1000, "height": 512, "batch_size": 1}

    def test_it_refuses_a_row_without_a_checkpoint(self, rsps):
        with pytest.raises(ProviderError) as info:
            ComfyUI(model(checkpoint="")).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert "checkpoint" in info.value.message
        assert not rsps.calls

    def test_it_uploads_the_reference_as_a_temp_file_and_scales_it_to_the_requested_size(self, rsps):
        digest = hashlib.sha256(PNG).hexdigest()[:32]
        rsps.post(f"{BASE}/upload/image", json={"name": f"charstudio-{digest}.png", "subfolder": "", "type": "temp"})
        rsps.post(f"{BASE}/prompt", json=QUEUED)
        references = [Reference(data=PNG, content_type="image/png", key="refs/a.png")] * 2
        request = GenerationRequest(
            prompt="p", num_images=2, denoise=0.45, seed=5, references=references, params={"image_size": "square"}
        )
        ComfyUI(model()).submit(request)

        upload = rsps.calls[0].request
        assert upload.headers["Content-Type"].startswith("multipart/form-data")
        assert b'name="image"; filename="charstudio-' + digest.encode() + b'.png"' in upload.body
        # The temp folder is the one ComfyUI empties itself; no overwrite, so a file another job
        # is reading is never rewritten (the server keeps an identical file as it is).
        assert b'name="type"\r\n\r\ntemp' in upload.body
        assert b'name="overwrite"' not in upload.body
        assert PNG in upload.body
        graph = sent_json(rsps.calls[1])["prompt"]
        assert "5" not in graph
        assert graph["10"] == {"class_type": "LoadImage", "inputs": {"image": f"charstudio-{digest}.png [temp]"}}
        assert graph["13"] == {
            "class_type": "ImageScale",
            "inputs": {"image": ["10", 0], "upscale_method": "lanczos", "width": 512, "height": 512, "crop": "center"},
        }
        assert graph["11"] == {"class_type": "VAEEncode", "inputs": {"pixels": ["13", 0], "vae": ["4", 2]}}
        assert graph["12"] == {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["11", 0], "amount": 2}}
        assert graph["3"]["inputs"]["latent_image"] == ["12", 0]
        assert graph["3"]["inputs"]["denoise"] == 0.45
        assert len(rsps.calls) == 2  # the duplicate reference is not uploaded twice

    def test_it_loads_an_upload_from_its_subfolder(self, rsps):
        rsps.post(f"{BASE}/upload/image", json={"name": "cat (1).png", "subfolder": "refs", "type": "temp"})
        rsps.post(f"{BASE}/prompt", json=QUEUED)
        ComfyUI(model()).submit(GenerationRequest(prompt="p", references=[Reference(PNG, "image/png")]))
        graph = sent_json(rsps.calls[1])["prompt"]
        assert graph["10"]["inputs"]["image"] == "refs/cat (1).png [temp]"
        assert graph["13"]["inputs"]["width"] == 832 and graph["13"]["inputs"]["height"] == 1216
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
            ComfyUI(model(checkpoint="missing.safetensors")).submit(GenerationRequest(prompt="p"))
        assert info.value.permanent
        assert info.value.message == (
            "ComfyUI answered HTTP 400: Prompt outputs failed validation: CheckpointLoaderSimple #4: "
            "Value not in list: ckpt_name: 'missing.safetensors' not in ['v1-5.safetensors']"
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

    def test_it_reports_the_servers_message_without_its_paths(self, rsps):
        # execution.py's answer for a node class the server lacks: message and details, no node errors.
        rejected = {
            "error": {
                "type": "invalid_prompt",
                "message": "Cannot execute because node ImageScale does not exist.",
                "details": "Node ID '#13'",
                "extra_info": {},
            },
            "node_errors": {},
        }
        rsps.post(f"{BASE}/prompt", json=rejected, status=400)
        with pytest.raises(ProviderError) as info:
            ComfyUI(model()).submit(GenerationRequest(prompt="p"))
        assert info.value.message == (
            "ComfyUI answered HTTP 400: Cannot execute because node ImageScale does not exist.: Node ID '#13'"
        )

    def test_it_hides_server_paths_in_node_errors(self, rsps):
        node_errors = {
            "4": {
                "errors": [
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": "ckpt_name - cannot read /home/comfy/ComfyUI/models/checkpoints/x.safetensors",
                        "extra_info": {},
                    }
                ],
                "dependent_outputs": ["9"],
                "class_type": "CheckpointLoaderSimple",
            }
        }
        error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"}
        rsps.post(
            f"{BASE}/prompt",
            json={"error": {**error, "details": "", "extra_info": {}}, "node_errors": node_errors},
            status=400,
        )
        with pytest.raises(ProviderError) as info:
            ComfyUI(model()).submit(GenerationRequest(prompt="p"))
        assert "/home" not in info.value.message
        assert info.value.message.endswith("Custom validation failed for node: ckpt_name - cannot read x.safetensors")

    def test_it_refuses_bad_parameters_before_queueing(self, rsps):
        with pytest.raises(ProviderError) as info:
            ComfyUI(model()).submit(GenerationRequest(prompt="p", params={"image_size": {"width": "wide"}}))
        assert info.value.permanent
        assert not rsps.calls


class TestComfyUIPoll:
    def test_it_waits_while_queued_then_downloads_the_batch_with_honest_seeds(self, rsps):
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
        rsps.get(f"{BASE}/queue", json=queue(pending=(PROMPT_ID,)))
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history(outputs))
        for name in ("charstudio_00001_.png", "charstudio_00002_.png"):
            view(rsps, name)
        comfy = ComfyUI(model())
        request = GenerationRequest(prompt="p", num_images=2)
        handles = {"client_id": REQUEST_ID, "seed": 99}

        pending = comfy.poll(request, PROMPT_ID, handles)
        done = comfy.poll(request, PROMPT_ID, handles)

        assert pending.status == ResultStatus.PENDING
        assert pending.poll_after == pytest.approx(1.0)
        assert done.status == ResultStatus.SUCCEEDED
        assert [image.data for image in done.images] == [PNG, PNG]
        assert all(image.content_type == "image/png" for image in done.images)
        # One seed noises the whole latent batch: image k is that seed at batch index k, so no
        # image of a batch claims the seed as its own.
        assert [image.seed for image in done.images] == [None, None]
        assert [image.metadata for image in done.images] == [
            {"filename": "charstudio_00001_.png", "seed": 99, "batch_index": 0, "batch_size": 2},
            {"filename": "charstudio_00002_.png", "seed": 99, "batch_index": 1, "batch_size": 2},
        ]
        assert rsps.calls[3].request.url == f"{BASE}/view?filename=charstudio_00001_.png&subfolder=&type=output"

    def test_a_single_image_keeps_its_seed(self, rsps):
        outputs = {"9": {"images": [{"filename": "charstudio_00003_.png", "subfolder": "", "type": "output"}]}}
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history(outputs))
        view(rsps, "charstudio_00003_.png")
        done = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {"seed": 7})
        assert done.images[0].seed == 7
        assert done.images[0].metadata == {
            "filename": "charstudio_00003_.png",
            "seed": 7,
            "batch_index": 0,
            "batch_size": 1,
        }

    def test_it_keeps_waiting_while_the_prompt_runs(self, rsps):
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json={})
        rsps.get(f"{BASE}/queue", json=queue(PROMPT_ID, pending=("someone-else",)))
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {})
        assert result.status == ResultStatus.PENDING
        assert len(rsps.calls) == 2

    def test_it_reports_a_prompt_lost_in_a_restart_as_retryable(self, rsps):
        # After a restart the server knows neither the history nor the queue entry of the prompt.
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json={})
        rsps.get(f"{BASE}/queue", json=queue("another-prompt"))
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json={})
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {})
        assert result.status == ResultStatus.FAILED
        assert not result.permanent  # the pipeline moves it to the next model instead of waiting
        assert "lost" in result.error

    def test_a_prompt_that_finishes_between_the_checks_is_not_lost(self, rsps):
        outputs = {"9": {"images": [{"filename": "charstudio_00004_.png", "subfolder": "", "type": "output"}]}}
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json={})
        rsps.get(f"{BASE}/queue", json=queue())
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history(outputs))
        view(rsps, "charstudio_00004_.png")
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {"seed": 1})
        assert result.status == ResultStatus.SUCCEEDED

    def test_it_reports_an_execution_error_in_the_servers_words_without_paths(self, rsps):
        messages = [
            ["execution_start", {"prompt_id": PROMPT_ID, "timestamp": 1}],
            [
                "execution_error",
                {
                    "prompt_id": PROMPT_ID,
                    "node_id": "10",
                    "node_type": "LoadImage",
                    "executed": ["4"],
                    "exception_message": "cannot identify image file '/home/comfy/ComfyUI/temp/charstudio-x.png'",
                    "exception_type": "PIL.UnidentifiedImageError",
                    "traceback": ['  File "/home/comfy/ComfyUI/execution.py", line 496, in execute\n'],
                    "current_inputs": {},
                    "current_outputs": {},
                    "timestamp": 2,
                },
            ],
        ]
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history({}, "error", messages))
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {})
        assert result.status == ResultStatus.FAILED
        assert result.permanent
        assert result.error == "ComfyUI failed in LoadImage: cannot identify image file 'charstudio-x.png'"

    def test_it_hides_windows_paths_too(self, rsps):
        error = {
            "prompt_id": PROMPT_ID,
            "node_id": "4",
            "node_type": "CheckpointLoaderSimple",
            "exception_message": "Error while deserializing header: C:\\ComfyUI\\models\\checkpoints\\x.safetensors",
            "exception_type": "safetensors_rust.SafetensorError",
        }
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history({}, "error", [["execution_error", error]]))
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {})
        assert (
            result.error == "ComfyUI failed in CheckpointLoaderSimple: Error while deserializing header: x.safetensors"
        )

    def test_an_interrupt_we_did_not_ask_for_is_retryable(self, rsps):
        interrupted = {
            "prompt_id": PROMPT_ID,
            "node_id": "3",
            "node_type": "KSampler",
            "executed": ["4"],
            "timestamp": 3,
        }
        messages = [
            ["execution_start", {"prompt_id": PROMPT_ID, "timestamp": 1}],
            ["execution_interrupted", interrupted],
        ]
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history({}, "error", messages))
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {})
        # Our own cancels end the job before it is polled again: this one came from the server.
        assert result.status == ResultStatus.FAILED
        assert not result.permanent
        assert result.error == "The ComfyUI run was interrupted on the server in KSampler."

    def test_it_fails_a_success_without_images(self, rsps):
        rsps.get(f"{BASE}/history/{PROMPT_ID}", json=history({}))
        result = ComfyUI(model()).poll(GenerationRequest(prompt="p"), PROMPT_ID, {})
        assert result.status == ResultStatus.FAILED


class TestComfyUICancel:
    def test_it_deletes_from_the_queue_and_interrupts_only_its_own_run(self, rsps):
        rsps.post(f"{BASE}/queue", body="", match=[matchers.json_params_matcher({"delete": [PROMPT_ID]})])
        rsps.get(f"{BASE}/queue", json=queue(PROMPT_ID))
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


class TestComfyUIRegistryValidation:
    def test_a_complete_row_is_valid(self):
        assert ComfyUI.validate_model(model()) == {}
        assert (
            ComfyUI.validate_model(api_model("c", "comfyui", capabilities={"comfyui": {"checkpoint": "a.ckpt"}})) == {}
        )

    @pytest.mark.parametrize(
        ("graph", "words"),
        [
            ({"checkpoint": ""}, '"checkpoint" must name'),
            ({"sampler": "euler_a"}, "\"sampler\" 'euler_a' is not one of ComfyUI's KSampler samplers."),
            ({"scheduler": "Karras"}, "\"scheduler\" 'Karras' is not one of"),
            ({"steps": 0}, '"steps" must be a whole number from 1 to 10000.'),
            ({"steps": 2.5}, '"steps" must be a whole number'),
            ({"cfg": 150}, '"cfg" must be a number from 0 to 100.'),
            ({"cfg": -1}, '"cfg" must be a number'),
            ({"size_multiple": 12}, '"size_multiple" must be a positive multiple of 8'),
            ({"width": 0}, '"width" must be a whole number of pixels'),
            ({"sampeler": "euler"}, "Unknown ComfyUI setting(s): sampeler."),
        ],
    )
    def test_it_rejects_what_the_server_would(self, graph, words):
        errors = ComfyUI.validate_model(model(**graph))
        assert list(errors) == ["capabilities"]
        assert words in errors["capabilities"]

    def test_a_row_without_comfyui_settings_is_invalid(self):
        errors = ComfyUI.validate_model(api_model("sd.safetensors", "comfyui"))
        assert '"comfyui"' in errors["capabilities"]

    def test_it_accepts_every_sampler_and_scheduler_of_comfyui_0_3_64(self):
        for sampler in ("euler", "dpmpp_2m_sde_gpu", "sa_solver_pece", "uni_pc_bh2", "ddim"):
            assert ComfyUI.validate_model(model(sampler=sampler)) == {}
        for scheduler in ("normal", "karras", "sgm_uniform", "beta", "linear_quadratic", "kl_optimal"):
            assert ComfyUI.validate_model(model(scheduler=scheduler)) == {}

    @pytest.mark.django_db  # full_clean checks the key is unique
    def test_admin_refuses_such_a_row(self):
        # ApiModel.clean() asks the adapter, so the admin form shows the error and saves nothing.
        row = model(sampler="euler_a")
        with pytest.raises(ValidationError) as info:
            row.full_clean()
        assert "'euler_a' is not one of ComfyUI's KSampler samplers." in info.value.message_dict["capabilities"][0]
        model().full_clean()
