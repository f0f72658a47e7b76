/** The part of mailsplit's API that homerelay uses (the package ships no types). */
declare module "mailsplit" {
  /** A header block: parsed lazily, rebuilt with CRLF line ends when changed. */
  export class Headers {
    constructor(headers: Buffer | string | []);
    get(key: string): string[];
    getFirst(key: string): string;
    hasHeader(key: string): boolean;
    getList(): { key: string; line: string }[];
    add(key: string, value: string, index?: number): void;
    addFormatted(key: string, line: string, index?: number): void;
    remove(key: string): void;
    build(lineEnd?: string): Buffer;
  }
}
