// The Directus CLI without its update check (a call to registry.npmjs.org on every command).
import('@directus/api/cli/run.js');
