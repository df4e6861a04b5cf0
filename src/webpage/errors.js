// Loaded first, as a classic script: every error of the page (a script that failed, a promise nobody caught,
// console.error) is kept in window.flowrunErrors, where a person in the console or a browser test reads them.
window.flowrunErrors = [];
window.addEventListener('error', (e) => {
  const where = e.target && e.target !== window ? ` (${e.target.src || e.target.href || e.target.tagName})` : '';
  window.flowrunErrors.push(`error: ${e.message || 'a resource did not load'}${where}`);
}, true);
window.addEventListener('unhandledrejection', (e) => {
  window.flowrunErrors.push(`unhandled rejection: ${e.reason && e.reason.stack || e.reason}`);
});
(function () {
  const original = console.error.bind(console);
  console.error = (...args) => {
    window.flowrunErrors.push(`console.error: ${args.map(String).join(' ')}`);
    original(...args);
  };
})();
