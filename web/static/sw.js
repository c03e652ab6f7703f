// Offline support: every file is cached the first time it is fetched (the page's own files up front) and
// served from the cache afterwards, falling back to the network for anything new.
const CACHE = 'kiln-demo-v1';
const PAGE = ['./', 'index.html', 'style.css', 'app.js', 'kiln_web.js', 'kiln_web_bg.wasm', 'models.json', 'digits.json'];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(PAGE)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener('fetch', (event) => {
  if (event.request.method !== 'GET') return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(event.request).then((hit) => hit ?? Response.error())),
  );
});
