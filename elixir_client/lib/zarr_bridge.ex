defmodule ZarrBridge do
  @moduledoc """
  Zarr arrays and numcodecs codecs for Elixir, served by a supervised Python
  sidecar (`pybridge`).

  The application starts one sidecar, `ZarrBridge.Sidecar`, which speaks the
  msgpack protocol of `protocol/PROTOCOL.md` to a long-running
  `python -m pybridge` process, with zarr-python and numcodecs as the
  engine. Every failure is returned as `{:error, %ZarrBridge.Error{}}`, and
  every function has a bang variant that raises it.

  The API follows ExZarr's:

    * `create/1` and `open/1` give a `ZarrBridge.Array`;
    * `ZarrBridge.Array` reads and writes slices (nested tuples, or
      `ZarrBridge.NDArray` for large data), attributes, and raw chunks, and
      resizes and appends;
    * `ZarrBridge.Group` creates, opens and walks groups;
    * `consolidate_metadata/1` writes a group's consolidated metadata;
    * `ZarrBridge.Codecs` runs any numcodecs codec on binaries.

  ## Stores

  Every function that names a node takes the same three options:

    * `:storage` - `:filesystem` (the default: a directory), `:zip` (a zip
      file, read and written, Zarr v2 and v3) or `:memory` (a store named
      `path` held inside the sidecar, alive as long as the sidecar process);
    * `:path` - the directory, the zip file, or the memory store's name;
    * `:node` - the path of the array or group inside the store (default
      `""`, the store's root). An array inside a group or a zip is opened
      by that path, e.g. `node: "labels/names"`.

  ## Example

  (These examples run as doctests against a real sidecar; the directory
  `dir` is a fresh temporary directory.)

      iex> dir = ZarrBridge.Test.DocFiles.dir()
      iex> {:ok, array} =
      ...>   ZarrBridge.create(
      ...>     shape: {500, 500},
      ...>     chunks: {50, 50},
      ...>     dtype: :int32,
      ...>     compressor: :zlib,
      ...>     storage: :filesystem,
      ...>     path: Path.join(dir, "results"),
      ...>     zarr_version: 2
      ...>   )
      iex> ZarrBridge.Array.set_slice(array, {{1, 2}, {3, 4}}, start: {0, 0}, stop: {2, 2})
      :ok
      iex> ZarrBridge.Array.put_attributes(array, %{"units" => "counts"})
      :ok
      iex> {:ok, array} = ZarrBridge.open(storage: :filesystem, path: Path.join(dir, "results"))
      iex> ZarrBridge.Array.get_slice(array, start: {0, 0}, stop: {2, 3})
      {:ok, {{1, 2, 0}, {3, 4, 0}}}
      iex> {:ok, root} = ZarrBridge.Group.create(storage: :zip, path: Path.join(dir, "archive.zip"))
      iex> {:ok, _} = ZarrBridge.Group.create_array(root, "labels/names", shape: {2}, dtype: :string)
      iex> {:ok, names} = ZarrBridge.open(storage: :zip, path: Path.join(dir, "archive.zip"),
      ...>                                node: "labels/names")
      iex> names.metadata.shape
      {2}

  Both Zarr formats are read and written (the format of an existing array is
  detected from its `.zarray` or `zarr.json`), and the arrays are the same
  files zarr-python reads and writes.
  """

  alias ZarrBridge.{Array, Error, Group, Options, Sidecar}
  alias ZarrBridge.Array.Open

  @type mode :: :r | :"r+" | :a | :w | :"w-"
  @type storage :: :filesystem | :zip | :memory

  @store_keys [:storage, :path, :node, :server, :timeout]

  @doc """
  Creates an array and returns it.

  ## Options

    * `:storage`, `:path` (required), `:node` - where (see "Stores" in the
      module doc). Relative filesystem and zip paths are expanded against
      the current directory.
    * `:shape` (required) - a tuple of non-negative integers.
    * `:dtype` (required) - an Elixir dtype (see `ZarrBridge.NDArray`), e.g.
      `:float64`, `:int32`, `:bool`, `{:datetime64, :ns}`, `:string`,
      `[{"x", :int32}, {"y", :float64}]`; a wire name such as `"float64"`
      is accepted too.
    * `:chunks` - a tuple of positive integers (default: the shape, one
      chunk; a zero length becomes 1).
    * `:zarr_version` - `2` or `3` (default `3`).
    * `:compressor` - a codec (`:zlib`, `:gzip`, `:zstd`, `:lz4`, `:blosc`,
      `:bz2`/`:bzip2`, `:lzma`, `{:blosc, cname: "zstd", clevel: 3,
      shuffle: :shuffle}`, a numcodecs config map, … see
      `ZarrBridge.Codecs`), or `nil` for no compression. When the option is
      **absent**, zarr-python's default applies: `zstd` at level 0 (for both
      formats, as zarr-python 3 does). Codec options left out take numcodecs'
      defaults (`:zlib` is level 1).
    * `:filters` - a list of codecs applied before the compressor, e.g.
      `[:shuffle, {:delta, dtype: :int32}]`, or `nil`. A `:shuffle` without
      `elementsize` gets the dtype's item size, and a `:delta`, `:quantize`
      or `:fixedscaleoffset` without `dtype` gets the array's dtype. For v3
      they become the equivalent v3 codecs.
    * `:codecs` - v3 only: the full codec list as v3 JSON maps with string
      keys (`%{"name" => "bytes", "configuration" => %{"endian" => "little"}}`),
      instead of `:compressor`/`:filters`.
    * `:shards` - v3 only: the shard shape (a tuple of multiples of
      `:chunks`).
    * `:fill_value` - the value of unwritten elements (zarr-python's default
      when absent: zero, `false`, NaT, `""`, …). `:nan`, `:infinity`,
      `:neg_infinity`, `{re, im}` and, for a structured dtype, a map of
      field values are accepted.
    * `:order` - `"C"`/`:c` or `"F"`/`:f` (the memory order of v2 chunks;
      v3 stores C order only).
    * `:dimension_separator` - `"."` or `"/"` for the chunk keys (defaults:
      `"."` for v2, `"/"` for v3).
    * `:chunk_key_encoding` - v3: `{:default, "/" | "."}` (chunk keys
      `c/0/1`, the default) or `{:v2, "." | "/"}` (keys `0.1`, as v2 has);
      a bare `:default` or `:v2` takes that encoding's default separator.
    * `:dimension_names` - v3 only: a list of names (strings or `nil`).
    * `:attributes` - a map of user attributes.
    * `:mode` - `:"w-"` (default: fail with `:already_exists` if something
      is there), `:w` (overwrite), `:a` (open if it exists, create
      otherwise), `:r`/`:"r+"` (open only).
    * `:server` - the sidecar (default `ZarrBridge.Sidecar`);
      `:timeout` - in milliseconds.

  Unknown options, and options of the wrong type, raise `ArgumentError`.

  ## Errors

  `:already_exists`, `:unsupported_dtype`, `:codec_unavailable`,
  `:invalid_codec_config`, `:invalid_params`, `:store_error`,
  `:forbidden_path`, and the sidecar's errors (`:timeout`, …).
  """
  @spec create(keyword) :: {:ok, Array.t()} | {:error, Error.t()}
  def create(opts) when is_list(opts), do: Open.create(opts)

  @doc "Like `create/1`, but raises `ZarrBridge.Error`."
  @spec create!(keyword) :: Array.t()
  def create!(opts), do: Options.bang(create(opts))

  @doc """
  Opens an existing array (Zarr v2 or v3, detected from its metadata).

  ## Options

    * `:storage`, `:path` (required), `:node` - where (see "Stores" in the
      module doc).
    * `:mode` - `:"r+"` (default: read and write), `:r` (read only: writes
      fail with `:read_only`) or `:a` (the same as `:"r+"` for an existing
      array). Opening never creates an array; use `create/1` for that.
      (The default is `:"r+"` rather than zarr-python's `"r"` so that an
      array opened with ExZarr's call can be updated, as ExZarr allows.)
    * `:server` - the sidecar (default `ZarrBridge.Sidecar`);
      `:timeout` - in milliseconds.

  When the store holds consolidated metadata above the array, the sidecar
  uses it, as zarr-python does.

  ## Errors

  `:not_found` (no array there, or a group), `:unsupported_dtype`,
  `:codec_unavailable` (the array uses a codec the sidecar lacks),
  `:invalid_metadata`, `:forbidden_path`, and the sidecar's errors.
  """
  @spec open(keyword) :: {:ok, Array.t()} | {:error, Error.t()}
  def open(opts) when is_list(opts), do: Open.open(opts)

  @doc "Like `open/1`, but raises `ZarrBridge.Error`."
  @spec open!(keyword) :: Array.t()
  def open!(opts), do: Options.bang(open(opts))

  @doc """
  Writes the consolidated metadata of the group at `node:` (every array's
  and group's metadata below it, in one document: v2 `.zmetadata`, or
  zarr-python's v3 form inside `zarr.json`) and returns the group.

  Opening an array or group below it then reads the consolidated document
  (zarr-python's default behaviour), so a store with many nodes opens with
  one read. Consolidate again after adding nodes or changing attributes.

  Options: `:storage`, `:path` (required), `:node` (see "Stores" in the
  module doc), `:server`, `:timeout`.

  Errors: `:not_found` (no group there), `:read_only`, `:store_error`,
  `:forbidden_path`.
  """
  @spec consolidate_metadata(keyword) :: {:ok, Group.t()} | {:error, Error.t()}
  def consolidate_metadata(opts) when is_list(opts) do
    Options.check!(opts, @store_keys)
    {storage, path, store} = Options.store!(opts)
    node = Options.node!(opts)
    params = %{"store" => store, "path" => node}

    case Sidecar.call(
           Options.server(opts),
           "store.consolidate_metadata",
           params,
           Options.call_opts(opts)
         ) do
      {:ok, %{"group" => info}} ->
        Group.from_info(info, %{
          storage: storage,
          path: path,
          store: store,
          node: node,
          server: Options.server(opts),
          mode: :"r+"
        })

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  @doc "Like `consolidate_metadata/1`, but raises `ZarrBridge.Error`."
  @spec consolidate_metadata!(keyword) :: Group.t()
  def consolidate_metadata!(opts), do: Options.bang(consolidate_metadata(opts))
end
