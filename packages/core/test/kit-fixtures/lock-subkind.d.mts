import type { SubkindOps } from '../../src/index.js';
export declare function lockDir(): string;
export declare function lockSubkind(): SubkindOps;
