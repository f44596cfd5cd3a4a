// Character Studio: the few behaviours htmx attributes cannot express. Everything here is an
// enhancement: without it the page still works through plain form posts.
(function () {
  "use strict";

  // Ctrl/Cmd+Enter in the prompt submits, unless a submission is already in flight (the
  // Generate button is disabled by hx-disabled-elt until the response arrives).
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    if (!target.matches || !target.matches("[data-submit-shortcut]")) return;
    event.preventDefault();
    var form = target.form;
    var button = form && form.querySelector("#generate-btn");
    if (!form || (button && button.disabled)) return;
    form.requestSubmit ? form.requestSubmit(button || undefined) : button.click();
  });

  // Batch mode turns Generate into "Add to batch"; the switch comes and goes with the model.
  function syncGenerateLabel() {
    var label = document.querySelector("[data-generate-label]");
    if (!label) return;
    var toggle = document.querySelector("[data-batch-toggle]");
    label.textContent = toggle && toggle.checked ? "Add to batch" : "Generate";
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("[data-batch-toggle]")) syncGenerateLabel();
  });
  document.addEventListener("htmx:afterSettle", syncGenerateLabel);

  // The strength slider shows its value as it moves.
  document.addEventListener("input", function (event) {
    var slider = event.target;
    if (!slider.matches || !slider.matches("input[type=range][data-output]")) return;
    var output = document.querySelector(slider.getAttribute("data-output"));
    if (output) output.textContent = Number(slider.value).toFixed(2);
  });

  // Forms and buttons that destroy something ask first (data-confirm): a plain form on submit,
  // an htmx one (a gallery card's image buttons) before htmx sends it.
  // A button's own data-confirm, else its form's data-question (a gallery card's Delete buttons).
  function question(form, submitter) {
    if (submitter && submitter.hasAttribute("data-confirm")) {
      var asks = form.closest && form.closest("[data-question]");
      return submitter.getAttribute("data-confirm") || (asks && asks.getAttribute("data-question"));
    }
    return form.getAttribute && form.getAttribute("data-confirm");
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute && form.hasAttribute("hx-post") && window.htmx) return;
    var ask = question(form, event.submitter);
    if (ask && !window.confirm(ask)) event.preventDefault();
  });

  document.addEventListener("htmx:confirm", function (event) {
    var trigger = event.detail.triggeringEvent;
    var ask = trigger && trigger.type === "submit" && question(event.detail.elt, trigger.submitter);
    if (!ask) return;
    event.preventDefault();
    if (window.confirm(ask)) event.detail.issueRequest(true);
  });

  // Drag and drop into the reference slots: files from the desktop go through the upload input
  // (so they are validated like a picked file); gallery images are posted as "use as reference".
  var ASSET_TYPE = "application/x-studio-asset";

  // A gallery image becomes draggable when the pointer reaches it: dropping needs this script
  // anyway, and 200 draggable attributes would weigh on every gallery page.
  document.addEventListener("pointerover", function (event) {
    var tile = event.target.closest && event.target.closest("figure.tile");
    if (tile && !tile.draggable) {
      tile.draggable = true;
      var image = tile.querySelector("img");
      if (image) image.draggable = false;
    }
  });

  document.addEventListener("dragstart", function (event) {
    var tile = event.target.closest && event.target.closest("figure.tile");
    var use = tile && tile.querySelector("button[name=use1]");
    if (!use) return;
    event.dataTransfer.setData(ASSET_TYPE, JSON.stringify({ url: use.form.getAttribute("action"), id: use.value }));
    event.dataTransfer.effectAllowed = "copy";
  });

  function dropzoneOf(event) {
    return event.target.closest && event.target.closest("[data-dropzone]");
  }

  document.addEventListener("dragover", function (event) {
    var zone = dropzoneOf(event);
    if (!zone) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("is-dragover");
  });

  document.addEventListener("dragleave", function (event) {
    var zone = dropzoneOf(event);
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("is-dragover");
  });

  document.addEventListener("drop", function (event) {
    var zone = dropzoneOf(event);
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("is-dragover");
    var dragged = event.dataTransfer.getData(ASSET_TYPE);
    if (dragged && window.htmx) {
      // "use": the next free slot (studio.views.asset_action). source: an element inside the
      // prompt form, so htmx posts the form's values with it.
      var asset = JSON.parse(dragged);
      window.htmx.ajax("POST", asset.url, {
        source: zone, values: { use: asset.id }, target: "#prompt-controls", swap: "outerHTML",
      });
      return;
    }
    var files = event.dataTransfer.files;
    var input = document.querySelector(zone.getAttribute("data-upload-input"));
    if (files && files.length && input) {
      var transfer = new DataTransfer();
      transfer.items.add(files[0]);
      input.files = transfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    }
  });

  // The gallery's live stream (htmx's SSE extension, studio/live.py) ends with "idle" when no job
  // runs (sse-close). A running card that arrives later (Generate, Retry failed) connects it again:
  // before the card is swapped in, so the card's sse-swap finds the open stream. A card that
  // arrived just as the stream ended is connected the same way.
  var live = { open: false };

  function gallery() {
    return document.getElementById("gallery-jobs");
  }

  function connectLive() {
    var element = gallery();
    var url = element && element.getAttribute("data-live-url");
    if (!url || live.open || !window.htmx) return;
    live.open = true;
    // A new attribute value makes htmx process the element again, which opens a new EventSource;
    // each running card is marked too, so it registers with that one.
    live.generation = (live.generation || 0) + 1;
    if (live.lastEventId) url = url.replace(/since=[^&]*/, "since=" + live.lastEventId);
    element.setAttribute("sse-connect", url + "&connection=" + live.generation);
    element.querySelectorAll("[sse-swap]").forEach(function (card) {
      card.setAttribute("data-live-connection", String(live.generation));
    });
    window.htmx.process(element);
  }

  document.addEventListener("htmx:sseOpen", function (event) {
    if (event.target === gallery()) live.open = true;
  });

  // Where a new connection starts: after the last card this page received.
  document.addEventListener("htmx:sseMessage", function (event) {
    if (event.detail && event.detail.lastEventId) live.lastEventId = event.detail.lastEventId;
  });

  document.addEventListener("htmx:sseClose", function (event) {
    var element = gallery();
    if (event.target !== element || event.detail.type !== "message") return;
    live.open = false;
    element.removeAttribute("sse-connect");
    if (element.querySelector("[sse-swap]")) connectLive();
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var html = event.detail.serverResponse;
    if (event.detail.shouldSwap && typeof html === "string" && html.indexOf("sse-swap=") !== -1) connectLive();
  });

  document.addEventListener("DOMContentLoaded", function () {
    var element = gallery();
    live.open = !!(element && element.hasAttribute("sse-connect"));
  });
})();
