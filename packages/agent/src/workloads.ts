/** The workload of a validated `service` config (see workload.ts). */
import type { ServiceConfig } from './config.js';
import { criuWorkload } from './criu-workload.js';
import { counterWorkload, processWorkload, type AgentWorkload } from './workload.js';

/** The workload of `service` on host `host` (a `criu` workload keeps its images in this host's `workDir`). */
export function workloadFor(service: ServiceConfig, host: string): AgentWorkload {
  switch (service.type) {
    case 'counter':
      return counterWorkload();
    case 'process':
      return processWorkload(service);
    case 'criu':
      return criuWorkload(service, host);
  }
}
