/* Ledgerly customer chat: live status and the streamed answer (Server-Sent Events), with
 * polling of the JSON status endpoint when SSE is not available or keeps failing.
 * Plain JavaScript, no build step. The page works without it (forms post and redirect).
 *
 * Streamed text is a draft: it is shown in #chat-draft, marked "not yet checked", and replaced
 * by the `reply` event, which carries the reply the server committed after its guard. A status
 * or draft_reset event clears the draft, so a draft the guard blocked never stays on screen. */
(function () {
  "use strict";
  var chat = document.getElementById("chat");
  if (!chat) return;

  var ticketId = chat.dataset.ticketId || "";
  var eventsUrl = chat.dataset.eventsUrl || "";
  var statusUrl = chat.dataset.statusUrl || "";
  var helpUrl = chat.dataset.helpUrl || "/help/SLUG/";
  var cursor = chat.dataset.cursor || "0-0";
  var working = chat.dataset.working === "1";

  var list = document.getElementById("chat-messages");
  var draft = document.getElementById("chat-draft");
  var draftText = draft ? draft.querySelector(".text") : null;
  var statusEl = document.getElementById("chat-status");
  var noticeEl = document.getElementById("chat-notice");
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");
  var sendButton = document.getElementById("chat-send");
  var humanForm = document.querySelector("[data-testid=talk-to-human-form]");

  var draftRaw = "";
  var source = null;
  var sseFailures = 0;
  var pollTimer = null;
  var mode = "none"; // "sse" | "poll"

  function csrfToken() {
    var field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function lastSeq() {
    var max = 0;
    list.querySelectorAll("[data-seq]").forEach(function (li) {
      var seq = parseInt(li.dataset.seq, 10);
      if (seq > max) max = seq;
    });
    return max;
  }

  // The model marks citations as [slug]; the sources are shown as links below the reply.
  function withoutCitations(text) {
    return text.replace(/\s*\[[a-z0-9][a-z0-9-]*\]/g, "").replace(/\s*\[[a-z0-9-]*$/, "");
  }

  function setStatus(status) {
    if (!status) return;
    working = !!status.working;
    var notice = status.notice || "";
    noticeEl.dataset.notice = notice;
    if (notice) {
      if (noticeEl.textContent !== status.text) noticeEl.textContent = status.text;
      noticeEl.classList.add("shown");
      statusEl.textContent = "";
    } else {
      noticeEl.textContent = "";
      noticeEl.classList.remove("shown");
      if (statusEl.textContent !== (status.text || "")) statusEl.textContent = status.text || "";
    }
    statusEl.classList.toggle("working", working && !notice);
  }

  function clearDraft() {
    draftRaw = "";
    if (!draft) return;
    draft.hidden = true;
    draftText.textContent = "";
  }

  function addDelta(text) {
    if (!draft) return;
    draftRaw += text;
    draftText.textContent = withoutCitations(draftRaw);
    draft.hidden = false;
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      node.setAttribute(k, attrs[k]);
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ratingForm(seq) {
    var f = el("form", { class: "rating", method: "post", action: chat.dataset.rateUrl, "data-testid": "rating-form" });
    f.appendChild(el("input", { type: "hidden", name: "csrfmiddlewaretoken", value: csrfToken() }));
    f.appendChild(el("input", { type: "hidden", name: "message_seq", value: String(seq) }));
    var fs = el("fieldset");
    fs.appendChild(el("legend", {}, "Was this answer helpful?"));
    var id = "rating-comment-" + seq;
    fs.appendChild(el("label", { class: "comment-label", for: id }, "Comment (optional)"));
    fs.appendChild(el("input", { type: "text", id: id, name: "comment", maxlength: "2000", "data-testid": "rating-comment" }));
    fs.appendChild(el("button", { type: "submit", name: "helpful", value: "yes", "data-testid": "rate-yes" }, "Yes, helpful"));
    fs.appendChild(el("button", { type: "submit", name: "helpful", value: "no", "data-testid": "rate-no" }, "Not helpful"));
    f.appendChild(fs);
    return f;
  }

  function sourcesBlock(sources) {
    var box = el("div", { class: "sources", "data-testid": "sources" });
    box.appendChild(el("span", {}, "Sources:"));
    var ul = el("ul");
    sources.forEach(function (s) {
      var li = el("li");
      var href = s.url || helpUrl.replace("SLUG", encodeURIComponent(s.slug));
      li.appendChild(el("a", { href: href, "data-testid": "source-link", "data-slug": s.slug }, s.title || s.slug));
      ul.appendChild(li);
    });
    box.appendChild(ul);
    return box;
  }

  // Add (or update) one message; returns its element.
  function upsertMessage(m) {
    var existing = document.getElementById("m" + m.seq);
    var li = el("li", {
      class: "message " + m.role,
      id: "m" + m.seq,
      "data-testid": "message",
      "data-seq": String(m.seq),
      "data-role": m.role,
    });
    var who = m.role === "customer" ? "You" : m.role === "staff" ? "Support team" : "Ledgerly assistant";
    li.appendChild(el("h3", { class: "who" }, who));
    li.appendChild(el("div", { class: "text", "data-testid": "message-text" }, m.text));
    if (m.sources && m.sources.length) li.appendChild(sourcesBlock(m.sources));
    if (m.role === "assistant" && ticketId) {
      if (m.rating) {
        li.appendChild(el("p", { class: "rated", "data-testid": "rating-saved" },
          "You rated this answer " + (m.rating.helpful ? "helpful" : "not helpful") + ". Thanks."));
      } else {
        li.appendChild(ratingForm(m.seq));
      }
    }
    if (existing) {
      // Keep what the customer is typing in a rating comment; replace only when needed.
      var same = existing.querySelector(".text").textContent === m.text &&
        !!existing.querySelector(".sources") === !!(m.sources && m.sources.length);
      if (same) return existing;
      existing.replaceWith(li);
      return li;
    }
    // Keep the list in sequence order.
    var after = null;
    list.querySelectorAll("[data-seq]").forEach(function (node) {
      if (parseInt(node.dataset.seq, 10) > m.seq && after === null) after = node;
    });
    list.insertBefore(li, after);
    return li;
  }

  // --- events --------------------------------------------------------------------------------
  function onEvent(kind, data) {
    if (kind === "status") {
      clearDraft(); // a new step (or a retry) begins: whatever was drafted is void
      setStatus({ text: data.text, working: data.working !== false, notice: data.notice || "" });
    } else if (kind === "delta") {
      addDelta(data.text || "");
      if (statusEl.textContent !== "Writing an answer…") statusEl.textContent = "Writing an answer…";
    } else if (kind === "draft_reset") {
      clearDraft();
    } else if (kind === "reply") {
      clearDraft();
      upsertMessage({
        seq: data.message_seq,
        role: data.role || "assistant",
        text: data.text,
        sources: data.sources || [],
      });
      setStatus(data.status || { text: "", working: false, notice: "" });
    } else if (kind === "state") {
      setStatus(data.status || { text: data.status_text || "", working: false, notice: "" });
    }
  }

  function startSSE() {
    if (!eventsUrl || !window.EventSource) return false;
    mode = "sse";
    source = new EventSource(eventsUrl + "?after=" + encodeURIComponent(cursor));
    ["status", "delta", "draft_reset", "reply", "state"].forEach(function (kind) {
      source.addEventListener(kind, function (e) {
        sseFailures = 0;
        if (e.lastEventId) cursor = e.lastEventId;
        var data = {};
        try { data = JSON.parse(e.data); } catch (err) { return; }
        onEvent(kind, data);
      });
    });
    source.onopen = function () { sseFailures = 0; };
    source.onerror = function () {
      // EventSource reconnects by itself (sending Last-Event-ID); give up after a few tries.
      sseFailures += 1;
      if (sseFailures >= 3 || source.readyState === EventSource.CLOSED) {
        source.close();
        startPolling();
      }
    };
    return true;
  }

  function poll() {
    if (!statusUrl) return;
    fetch(statusUrl + "?after_seq=" + lastSeq(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        var hadNew = false;
        (data.messages || []).forEach(function (m) { upsertMessage(m); if (m.role !== "customer") hadNew = true; });
        if (hadNew) clearDraft();
        if (mode === "poll" || !working || hadNew) setStatus(data.status);
      })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(schedulePoll);
  }

  function schedulePoll() {
    clearTimeout(pollTimer);
    // Polling mode: fast while the assistant works. Beside SSE: a slow check for news that
    // arrives without an event (a refund approved while the page was open).
    var delay = mode === "poll" ? (working ? 1500 : 5000) : 10000;
    pollTimer = setTimeout(poll, delay);
  }

  function startPolling() {
    mode = "poll";
    poll();
  }

  // --- sending -------------------------------------------------------------------------------
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
    }).then(function (r) {
      return r.json().then(function (data) { return { ok: r.ok, data: data }; },
        function () { return { ok: r.ok, data: {} }; });
    });
  }

  function showError(message) {
    noticeEl.textContent = message;
    noticeEl.dataset.notice = "error";
    noticeEl.classList.add("shown");
  }

  function afterSubmit(res) {
    if (!res.ok) {
      showError(res.data.error ? "Your message could not be sent: " + res.data.error + "." : "Your message could not be sent. Please try again.");
      return;
    }
    if (ticketId && String(res.data.ticket_id) !== ticketId) {
      window.location.assign(res.data.url + "?after=" + encodeURIComponent(res.data.cursor));
      return;
    }
    if (!ticketId) becomeConversation(res.data);
    if (res.data.message) upsertMessage(res.data.message);
    setStatus(res.data.status);
    if (mode === "poll") poll();
  }

  // The first message of a new conversation: this page becomes its page (no reload, so the
  // status shows at once and the stream starts from the cursor the post returned).
  function becomeConversation(data) {
    ticketId = String(data.ticket_id);
    eventsUrl = data.events;
    statusUrl = data.status_url;
    cursor = data.cursor || "0-0";
    chat.dataset.ticketId = ticketId;
    chat.dataset.rateUrl = data.rate_url;
    form.action = data.message_url;
    if (humanForm) humanForm.action = data.human_url;
    var title = document.getElementById("chat-title");
    if (title && data.subject) title.textContent = data.subject.length > 80 ? data.subject.slice(0, 79) + "…" : data.subject;
    var label = form.querySelector("label[for=chat-input]");
    if (label) label.textContent = "Your reply";
    var newLink = document.getElementById("new-conversation");
    if (newLink) newLink.removeAttribute("aria-current");
    var tickets = document.querySelector("#ticket-list ul");
    if (tickets) {
      if (!tickets.querySelector("a")) tickets.textContent = "";
      var item = el("li");
      var subject = data.subject || "";
      item.appendChild(el("a", { href: data.url, "data-testid": "ticket-link", "data-ticket-id": ticketId, "aria-current": "page" },
        subject.length > 48 ? subject.slice(0, 47) + "…" : subject));
      tickets.insertBefore(item, tickets.firstChild);
    }
    if (window.history && window.history.replaceState) window.history.replaceState(null, "", data.url);
    if (!startSSE()) startPolling(); else schedulePoll();
  }

  if (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!input.value.trim()) { input.focus(); return; }
      sendButton.disabled = true;
      var body = new FormData(form);
      post(form.action, body).then(function (res) {
        if (res.ok) input.value = "";
        afterSubmit(res);
      }, function () {
        showError("Your message could not be sent: the connection failed. Please try again.");
      }).then(function () {
        sendButton.disabled = false;
        input.focus();
      });
    });
    input.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        form.requestSubmit ? form.requestSubmit() : form.submit();
      }
    });
  }

  if (humanForm) {
    humanForm.addEventListener("submit", function (e) {
      e.preventDefault();
      post(humanForm.action, new FormData(humanForm)).then(afterSubmit, function () {
        showError("We couldn't reach the server. Please try again.");
      });
    });
  }

  // Ratings (delegated: answers added live get forms too).
  list.addEventListener("submit", function (e) {
    var f = e.target;
    if (!f.matches || !f.matches("form.rating")) return;
    e.preventDefault();
    var body = new FormData(f);
    var button = e.submitter;
    body.set("helpful", button && button.value ? button.value : "yes");
    post(f.action, body).then(function (res) {
      if (!res.ok) {
        showError(res.data.error ? "Your rating could not be saved: " + res.data.error + "." : "Your rating could not be saved.");
        return;
      }
      var done = el("p", { class: "rated", "data-testid": "rating-saved", tabindex: "-1" },
        "You rated this answer " + (res.data.helpful ? "helpful" : "not helpful") + ". Thanks.");
      f.replaceWith(done);
      done.focus();
    });
  });

  if (ticketId) {
    if (!startSSE()) startPolling(); else schedulePoll();
  }
  if (input && (!ticketId || window.location.search.indexOf("after=") >= 0)) input.focus();
})();
