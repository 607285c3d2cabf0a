// Sluice built-in chat. The conversation lives in this browser (localStorage) and never on the
// server; each turn goes through the real /v1/chat/completions with the chosen key (streamed,
// billed like any call). Model text is only ever put into the page as text nodes
// (textContent, createTextNode): the small Markdown reader below builds elements itself, so
// nothing an answer says can become HTML, an attribute or a script.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("chat-config").textContent);
  var text = config.text;
  var form = document.getElementById("chat-form");
  var keySelect = document.getElementById("chat-key");
  var modelSelect = document.getElementById("chat-model");
  var log = document.getElementById("chat-log");
  var empty = document.getElementById("chat-empty");
  var input = document.getElementById("chat-input");
  var sendButton = document.getElementById("chat-send");
  var stopButton = document.getElementById("chat-stop");
  var clearButton = document.getElementById("chat-clear");
  var status = document.getElementById("chat-status");
  var csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  // One conversation per account in this browser. The key itself is never stored: it is
  // fetched from the server (owner only) when the page needs it and kept in memory.
  var storageKey = "sluice-chat:" + config.user;
  var state = load();
  var revealed = {};
  var controller = null;

  function load() {
    try {
      var saved = JSON.parse(window.localStorage.getItem(storageKey) || "null");
      if (saved && Array.isArray(saved.messages)) return saved;
    } catch (error) {
      // A damaged entry starts a fresh conversation.
    }
    return { messages: [], model: "", keyId: null };
  }

  function save() {
    try {
      window.localStorage.setItem(storageKey, JSON.stringify(state));
    } catch (error) {
      // Storage full or disabled: the conversation still works, it is just not kept.
    }
  }

  function say(message, isError) {
    status.textContent = message || "";
    status.classList.toggle("bad", !!isError);
  }

  // --- Markdown, safely --------------------------------------------------------------------

  var INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=[^\s*])([^*\n]*?[^\s*])\*|\[([^\]\n]+)\]\(([^)\s]+)\)/;

  function safeHref(url) {
    try {
      var parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (error) {
      return null;
    }
  }

  // Appends `source` to `parent` as text nodes and the few inline forms (code, bold, italic,
  // http(s) links), each built as an element whose content is text.
  function inline(parent, source) {
    var rest = source;
    while (rest) {
      var match = INLINE.exec(rest);
      if (!match) {
        parent.appendChild(document.createTextNode(rest));
        return;
      }
      if (match.index) parent.appendChild(document.createTextNode(rest.slice(0, match.index)));
      var node;
      if (match[1]) {
        node = document.createElement("code");
        node.textContent = match[2];
      } else if (match[3] || match[4]) {
        node = document.createElement("strong");
        inline(node, match[3] || match[4]);
      } else if (match[5]) {
        node = document.createElement("em");
        inline(node, match[5]);
      } else {
        var href = safeHref(match[7]);
        if (href) {
          node = document.createElement("a");
          node.href = href;
          node.rel = "noopener noreferrer nofollow";
          node.target = "_blank";
          inline(node, match[6]);
        } else {
          node = document.createTextNode(match[0]);
        }
      }
      parent.appendChild(node);
      rest = rest.slice(match.index + match[0].length);
    }
  }

  function codeBlock(language, lines) {
    var wrap = document.createElement("div");
    wrap.className = "chat-code";
    var bar = document.createElement("div");
    bar.className = "chat-code-bar";
    var name = document.createElement("span");
    name.textContent = language || "";
    var copy = document.createElement("button");
    copy.type = "button";
    copy.className = "chat-copy";
    copy.textContent = text.copy;
    copy.setAttribute("data-copied", text.copied);
    copy.setAttribute("data-copy", lines.join("\n")); // site.js copies it
    bar.appendChild(name);
    bar.appendChild(copy);
    var pre = document.createElement("pre");
    var code = document.createElement("code");
    code.textContent = lines.join("\n");
    pre.appendChild(code);
    wrap.appendChild(bar);
    wrap.appendChild(pre);
    return wrap;
  }

  // Block forms: ``` fences (an unclosed one runs to the end, as while streaming), # headings,
  // - / * / 1. lists, > quotes, paragraphs with their line breaks.
  function markdown(source) {
    var root = document.createDocumentFragment();
    var lines = source.replace(/\r\n?/g, "\n").split("\n");
    var paragraph = [];
    var list = null;

    function endParagraph() {
      if (!paragraph.length) return;
      var p = document.createElement("p");
      paragraph.forEach(function (line, index) {
        if (index) p.appendChild(document.createElement("br"));
        inline(p, line);
      });
      root.appendChild(p);
      paragraph = [];
    }

    function endList() {
      list = null;
    }

    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      var fence = /^\s*(```+|~~~+)\s*([\w+#.-]*)/.exec(line);
      if (fence) {
        endParagraph();
        endList();
        var body = [];
        var closing = new RegExp("^\\s*" + fence[1].charAt(0) + "{" + fence[1].length + ",}\\s*$");
        for (i += 1; i < lines.length && !closing.test(lines[i]); i++) body.push(lines[i]);
        root.appendChild(codeBlock(fence[2], body));
        continue;
      }
      var heading = /^(#{1,6})\s+(.*)$/.exec(line);
      var bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
      var numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
      var quote = /^\s*>\s?(.*)$/.exec(line);
      if (!line.trim()) {
        endParagraph();
        endList();
      } else if (heading) {
        endParagraph();
        endList();
        var h = document.createElement("h" + Math.min(6, heading[1].length + 2));
        inline(h, heading[2]);
        root.appendChild(h);
      } else if (bullet || numbered) {
        endParagraph();
        var tag = bullet ? "ul" : "ol";
        if (!list || list.tagName.toLowerCase() !== tag) {
          list = document.createElement(tag);
          root.appendChild(list);
        }
        var item = document.createElement("li");
        inline(item, (bullet || numbered)[1]);
        list.appendChild(item);
      } else if (quote) {
        endParagraph();
        endList();
        var blockquote = document.createElement("blockquote");
        inline(blockquote, quote[1]);
        root.appendChild(blockquote);
      } else {
        endList();
        paragraph.push(line);
      }
    }
    endParagraph();
    return root;
  }

  // --- The conversation on the page ---------------------------------------------------------

  function messageElement(message) {
    var box = document.createElement("div");
    box.className = "chat-msg chat-" + message.role;
    var who = document.createElement("div");
    who.className = "chat-who";
    who.textContent = message.role === "user" ? text.you : text.assistant;
    var body = document.createElement("div");
    body.className = "chat-body";
    box.appendChild(who);
    box.appendChild(body);
    fill(box, message);
    return box;
  }

  function fill(box, message) {
    var body = box.querySelector(".chat-body");
    body.textContent = "";
    if (message.role === "user") {
      body.textContent = message.content; // what the person typed, as typed
    } else {
      body.appendChild(markdown(message.content || ""));
    }
    var note = box.querySelector(".chat-note");
    if (message.note) {
      if (!note) {
        note = document.createElement("div");
        note.className = "chat-note small";
        box.appendChild(note);
      }
      note.textContent = message.note;
      note.classList.toggle("bad", !!message.error);
    } else if (note) {
      note.remove();
    }
  }

  function render() {
    log.textContent = "";
    if (!state.messages.length) log.appendChild(empty);
    state.messages.forEach(function (message) {
      log.appendChild(messageElement(message));
    });
    log.scrollTop = log.scrollHeight;
  }

  // --- Keys and models ----------------------------------------------------------------------

  function revealKey(keyId) {
    if (revealed[keyId]) return Promise.resolve(revealed[keyId]);
    var url = config.revealUrl.replace("/0/", "/" + encodeURIComponent(keyId) + "/");
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken },
    }).then(function (response) {
      if (!response.ok) throw new Error(String(response.status));
      return response.json();
    }).then(function (body) {
      revealed[keyId] = body.key;
      return body.key;
    });
  }

  function errorMessage(body, response) {
    if (body && body.error && typeof body.error.message === "string") return body.error.message;
    return response.status + " " + response.statusText;
  }

  // /v1/models lists every model the key may call; the chat offers those that chat.
  var NOT_CHAT = /embedding|instruct|whisper|tts|dall-e|image|moderation|rerank|davinci|babbage/i;

  function loadModels() {
    var keyId = keySelect.value;
    modelSelect.disabled = true;
    say("");
    return revealKey(keyId).then(function (key) {
      return fetch(config.apiBase + "/models", { headers: { Authorization: "Bearer " + key } });
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (body) {
        if (!response.ok) throw new Error(errorMessage(body, response));
        return body.data.map(function (model) { return model.id; }).filter(function (id) {
          return !NOT_CHAT.test(id);
        });
      });
    }).then(function (models) {
      modelSelect.textContent = "";
      models.forEach(function (id) {
        var option = document.createElement("option");
        option.value = id;
        option.textContent = id;
        modelSelect.appendChild(option);
      });
      if (!models.length) {
        say(text.noModels, true);
        return;
      }
      if (models.indexOf(state.model) >= 0) modelSelect.value = state.model;
      state.model = modelSelect.value;
      modelSelect.disabled = false;
    }).catch(function (error) {
      modelSelect.textContent = "";
      say(text.keyFailed + " " + error.message, true);
    });
  }

  // --- Sending and streaming ----------------------------------------------------------------

  // Reads an SSE body, calling onData with each event's data (a JSON text or "[DONE]").
  function readEvents(response, onData) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (step) {
        if (step.done) return;
        buffer += decoder.decode(step.value, { stream: true });
        var events = buffer.split(/\r?\n\r?\n/);
        buffer = events.pop();
        events.forEach(function (event) {
          var data = event.split(/\r?\n/).filter(function (line) {
            return line.indexOf("data:") === 0;
          }).map(function (line) {
            return line.slice(5).replace(/^ /, "");
          }).join("\n");
          if (data) onData(data);
        });
        return pump();
      });
    }
    return pump();
  }

  function busy(on) {
    sendButton.hidden = on;
    stopButton.hidden = !on;
    input.disabled = false;
    keySelect.disabled = on;
    modelSelect.disabled = on || !modelSelect.options.length;
    clearButton.disabled = on;
  }

  function send() {
    var content = input.value.trim();
    if (!content || controller) return;
    if (!modelSelect.value) {
      say(text.pickModel, true);
      return;
    }
    state.model = modelSelect.value;
    state.keyId = keySelect.value;
    var history = state.messages.filter(function (message) {
      return !message.error && message.content;
    }).map(function (message) {
      return { role: message.role, content: message.content };
    });
    history.push({ role: "user", content: content });
    state.messages.push({ role: "user", content: content });
    var answer = { role: "assistant", content: "", model: state.model };
    state.messages.push(answer);
    input.value = "";
    save();
    render();
    var box = log.lastChild;
    answer.note = text.thinking;
    fill(box, answer);

    controller = new AbortController();
    busy(true);
    var scheduled = false;
    function show() {
      if (scheduled) return;
      scheduled = true;
      window.requestAnimationFrame(function () {
        scheduled = false;
        var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
        fill(box, answer);
        if (atBottom) log.scrollTop = log.scrollHeight;
      });
    }

    revealKey(state.keyId).then(function (key) {
      return fetch(config.apiBase + "/chat/completions", {
        method: "POST",
        headers: { Authorization: "Bearer " + key, "Content-Type": "application/json" },
        body: JSON.stringify({ model: state.model, messages: history, stream: true }),
        signal: controller.signal,
      });
    }).then(function (response) {
      if (!response.ok) {
        return response.json().catch(function () { return null; }).then(function (body) {
          throw new Error(errorMessage(body, response));
        });
      }
      answer.note = "";
      return readEvents(response, function (data) {
        if (data === "[DONE]") return;
        var chunk;
        try {
          chunk = JSON.parse(data);
        } catch (error) {
          return;
        }
        if (chunk.error) throw new Error(chunk.error.message || "error");
        var delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && typeof delta.content === "string") {
          answer.content += delta.content;
          show();
        }
      });
    }).then(function () {
      answer.note = "";
    }, function (error) {
      if (error && error.name === "AbortError") {
        answer.note = text.stopped;
      } else {
        answer.error = !answer.content;
        answer.note = text.failed + " " + (error && error.message ? error.message : text.network);
      }
    }).then(function () {
      controller = null;
      busy(false);
      save();
      fill(box, answer);
      input.focus();
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send();
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  stopButton.addEventListener("click", function () {
    if (controller) controller.abort();
  });
  clearButton.addEventListener("click", function () {
    if (state.messages.length && !window.confirm(text.confirmClear)) return;
    state.messages = [];
    save();
    render();
  });
  keySelect.addEventListener("change", function () {
    state.keyId = keySelect.value;
    save();
    loadModels();
  });
  modelSelect.addEventListener("change", function () {
    state.model = modelSelect.value;
    save();
  });

  // A key named in the address (?key=) wins; otherwise the one used last, if still offered.
  var fromAddress = new URLSearchParams(window.location.search).get("key");
  if (!fromAddress && state.keyId && keySelect.querySelector('option[value="' + Number(state.keyId) + '"]')) {
    keySelect.value = String(Number(state.keyId));
  }
  render();
  loadModels();
})();
