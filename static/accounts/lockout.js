// The lockout on the login page: one message that counts down, and the
// button off until the lock runs out.

const note = document.getElementById("lock-countdown");
if (note) {
  const button = document.querySelector("form button[type=submit]");
  const until = Date.now() + Number(note.dataset.seconds) * 1000;
  const tick = () => {
    const ms = until - Date.now();
    if (ms > 0) {
      const seconds = Math.ceil(ms / 1000);
      note.textContent = `Too many login attempts. Try again in ${seconds} second${seconds === 1 ? "" : "s"}.`;
      button.disabled = true;
      setTimeout(tick, ms % 1000 || 1000);
    } else {
      note.textContent = "You can try again now.";
      // Good news, not an error any more.
      note.classList.replace("form-error", "form-ok");
      button.disabled = false;
    }
  };
  tick();
}
