/**
 * What a QEMU offers, read from `query-qmp-schema` rather than guessed from
 * its version. QEMU masks type names in the schema (they are numbers), but
 * command and event names, member names and enum values are real, so probes
 * start from a command and walk its arguments by member name.
 */
import type { QmpClient, QmpCommandOptions } from './client.js';

/** One entry of `query-qmp-schema` (SchemaInfo). Only the fields the probes read are typed. */
export interface SchemaInfo {
  readonly name: string;
  readonly 'meta-type': 'builtin' | 'enum' | 'array' | 'object' | 'alternate' | 'command' | 'event';
  /** command: its (boxed) argument type. */
  readonly 'arg-type'?: string;
  /** array: the element type. */
  readonly 'element-type'?: string;
  /** object: its members. */
  readonly members?: readonly { readonly name: string; readonly type?: string }[];
  /** object: the variants of a union, by discriminator value. */
  readonly variants?: readonly { readonly case: string; readonly type: string }[];
  /** enum: its values. */
  readonly values?: readonly string[];
}

/** A QEMU's QMP schema, indexed for probing. */
export class QmpSchema {
  readonly #byName = new Map<string, SchemaInfo>();
  readonly #commands = new Set<string>();
  readonly #events = new Set<string>();

  constructor(entries: readonly SchemaInfo[]) {
    for (const e of entries) {
      this.#byName.set(e.name, e);
      if (e['meta-type'] === 'command') this.#commands.add(e.name);
      else if (e['meta-type'] === 'event') this.#events.add(e.name);
    }
  }

  /** Reads the schema of the QEMU behind `client` (one `query-qmp-schema`, ~200 KB on QEMU 7.2). */
  static async query(client: QmpClient, options?: QmpCommandOptions): Promise<QmpSchema> {
    return new QmpSchema(await client.execute<SchemaInfo[]>('query-qmp-schema', undefined, options));
  }

  /** True if QEMU has the command (unstable `x-` commands included). */
  hasCommand(name: string): boolean {
    return this.#commands.has(name);
  }

  /** True if QEMU can emit the event. */
  hasEvent(name: string): boolean {
    return this.#events.has(name);
  }

  /**
   * The values of the enum found by walking from `command`'s arguments
   * along `path` (member names; arrays are stepped through). Undefined if
   * the command, a member or the enum is missing. Examples on QEMU 7.2:
   * `enumValues('blockdev-add', ['driver'])` lists the block drivers built in
   * (`replication` only where CONFIG_REPLICATION is on);
   * `enumValues('migrate-set-capabilities', ['capabilities', 'capability'])`
   * lists migration capabilities (`x-colo`).
   */
  enumValues(command: string, path: readonly string[]): readonly string[] | undefined {
    const cmd = this.#byName.get(command);
    if (!cmd || cmd['meta-type'] !== 'command' || !cmd['arg-type']) return undefined;
    let type = this.#resolve(cmd['arg-type']);
    for (const member of path) {
      const found = type?.members?.find((m) => m.name === member);
      if (!found?.type) return undefined;
      type = this.#resolve(found.type);
    }
    return type?.['meta-type'] === 'enum' ? (type.values ?? []) : undefined;
  }

  /** The entry named `name`, with arrays stepped through to their element type. */
  #resolve(name: string): SchemaInfo | undefined {
    let t = this.#byName.get(name);
    for (let i = 0; t?.['meta-type'] === 'array' && i < 8; i++) t = this.#byName.get(t['element-type'] ?? '');
    return t;
  }
}
