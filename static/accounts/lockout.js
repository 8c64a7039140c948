// Count the lockout down so the person knows when to try again.
const note = document.getElementById("lock-countdown");
if (note) {
  let left = Number(note.dataset.seconds);
  const tick = () => {
    note.textContent = left > 0 ? `You can try again in ${left} s.` : "You can try again now.";
    if (left-- > 0) setTimeout(tick, 1000);
  };
  tick();
}
