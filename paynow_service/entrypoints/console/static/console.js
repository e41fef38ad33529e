// Every DLQ action asks before it runs: a form with data-confirm posts only once confirmed,
// with confirm=yes (without this script the server answers a confirmation page first).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const message = form.dataset ? form.dataset.confirm : undefined;
  if (!message) {
    return;
  }
  if (!window.confirm(message)) {
    event.preventDefault();
    return;
  }
  const flag = form.querySelector("input[name=confirm]");
  if (flag) {
    flag.value = "yes";
  }
});
