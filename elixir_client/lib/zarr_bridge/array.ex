defmodule ZarrBridge.Array do
  @moduledoc """
  A Zarr array (v2 or v3) opened or created with `ZarrBridge.open/1`,
  `ZarrBridge.create/1` or `ZarrBridge.Group`.

  The struct is a handle: it names the store, the node inside it and the
  sidecar, and holds a **snapshot** of the array's metadata taken when it
  was opened or created. Reads and writes always go to the store, so they
  see the current data. After `put_attributes/3` or `update_attributes/3`
  the attributes in the store are current, while `array.metadata.attributes`
  keeps the snapshot: use `get_attributes/2`, or `refresh/2` to take a new
  snapshot. `resize/3` and `append/3` return the struct with the new
  metadata (`append_region/3` also the region it wrote). Resizes and
  appends through one sidecar are serialized per array.

  Fields: `metadata` (`ZarrBridge.Metadata`), `storage` (`:filesystem`,
  `:zip` or `:memory`), `path` (the absolute path of the directory or zip
  file, or the memory store's name), `node` (the array's path inside the
  store, `""` for the root), `mode` (the mode it was opened with), `server`
  (the sidecar), `store` (the store map sent on the wire).

  ## Data

    * `get_slice/2` and `set_slice/3` use nested tuples, as ExZarr does: a
      2-d slice is a tuple of row tuples. NaN and the infinities are
      `:nan`, `:infinity` and `:neg_infinity`; see `ZarrBridge.NDArray` for
      every dtype.
    * `read/2` and `write/3` use `ZarrBridge.NDArray` (a binary with its
      shape and dtype, or a list of binaries for `:string` and `:bytes`):
      the fast path for large data.
    * `chunk_keys/2`, `read_chunk_raw/3` and `write_chunk_raw/4` give the
      stored chunk (or shard) bytes as they are, for a Zarr implementation
      that does its own decoding.

  A selection is given by `start:` and `stop:` tuples, one entry per
  dimension, half-open (`stop` excluded), and for reads a `step:` tuple of
  positive integers. A missing `start` is the origin, a missing `stop` the
  end of the array, a missing `step` all ones.

  As in Python's slices, an entry may be `nil`: in `start` it is 0, in
  `stop` the array's extent on that axis (from the struct's metadata
  snapshot: `refresh/2` after another handle resized it), in `step` 1. So
  `start: {3, nil}, stop: {4, nil}` is row 3, every column. Entries are
  otherwise non-negative integers (`step`: positive); anything else (a
  list instead of a tuple, a tuple of another size than the array's rank,
  `:end`, a float, a negative number, a zero step) gives
  `{:error, %ZarrBridge.Error{code: :invalid_selection}}` whose message
  names the option, the axis and the value (`details`: `option`, `axis`,
  `value`); the bang variants raise it.

  ## Options

  Every function accepts `server:` (overrides the array's sidecar) and
  `timeout:` (milliseconds; default: the sidecar's). Unknown options raise
  `ArgumentError`.

  ## Errors

  `{:error, %ZarrBridge.Error{}}` with, among others: `:invalid_selection`
  (out of bounds, negative, or wrong rank), `:data_size_mismatch` (the data
  does not fill the selection exactly), `:read_only` (a write to an array
  opened with mode `:r`), `:not_found` (the array is gone, or no such
  chunk), `:codec_unavailable`, `:timeout`.
  """

  alias ZarrBridge.{Error, Metadata, NDArray, Options}
  alias ZarrBridge.Array.Request

  @enforce_keys [:metadata, :path, :store]
  defstruct [
    :metadata,
    :path,
    :store,
    node: "",
    storage: :filesystem,
    mode: :"r+",
    server: Sidecar
  ]

  @type mode :: :r | :"r+" | :a | :w | :"w-"

  @type t :: %__MODULE__{
          metadata: Metadata.t(),
          storage: :filesystem | :zip | :memory,
          path: String.t(),
          node: String.t(),
          mode: mode,
          server: GenServer.server(),
          store: %{required(String.t()) => String.t()}
        }

  @common [:server, :timeout]

  @doc """
  Reads a slice as nested tuples.

      iex> {:ok, array} = ZarrBridge.create(shape: {4, 6}, dtype: :int32, storage: :memory, path: "doc-get")
      iex> :ok = ZarrBridge.Array.set_slice(array, for(r <- 0..3, do: for(c <- 0..5, do: 10 * r + c)))
      iex> ZarrBridge.Array.get_slice(array, start: {0, 0}, stop: {2, 3})
      {:ok, {{0, 1, 2}, {10, 11, 12}}}
      iex> # every other row and every third column
      iex> ZarrBridge.Array.get_slice(array, step: {2, 3})
      {:ok, {{0, 3}, {20, 23}}}

  Options: `start:`, `stop:` (default: the whole array), `step:` (default:
  all ones), `handoff:` (see `read/2`), `server:`, `timeout:`.
  """
  @spec get_slice(t, keyword) :: {:ok, term} | {:error, Error.t()}
  def get_slice(%__MODULE__{} = array, opts \\ []) do
    with {:ok, nd} <- read(array, opts), do: {:ok, NDArray.to_nested(nd)}
  end

  @doc "Like `get_slice/2`, but raises `ZarrBridge.Error`."
  @spec get_slice!(t, keyword) :: term
  def get_slice!(array, opts \\ []), do: Options.bang(get_slice(array, opts))

  @doc """
  Writes nested tuples (or lists) into a slice.

      iex> {:ok, array} = ZarrBridge.create(shape: {3, 3}, dtype: :int32, storage: :memory, path: "doc-set")
      iex> ZarrBridge.Array.set_slice(array, {{1, 2}, {3, 4}}, start: {0, 0}, stop: {2, 2})
      :ok
      iex> ZarrBridge.Array.set_slice(array, {{1, 2}}, start: {0, 0}, stop: {2, 2})
      ...> |> elem(1) |> Map.fetch!(:code)
      :data_size_mismatch

  The data's shape must be exactly `stop - start`, or the result is
  `{:error, %ZarrBridge.Error{code: :data_size_mismatch}}`. Without `stop:`
  the data's shape is used; without `start:` the origin. Each element must
  fit the array's dtype (`:invalid_params` otherwise).

  Options: `start:`, `stop:`, `server:`, `timeout:`.
  """
  @spec set_slice(t, term, keyword) :: :ok | {:error, Error.t()}
  def set_slice(%__MODULE__{} = array, data, opts \\ []) do
    Options.check!(opts, [:start, :stop | @common])
    %Metadata{dtype: dtype, shape: array_shape} = array.metadata

    with {:ok, shape, list} <- NDArray.flatten(data, dtype),
         {:ok, start, stop} <- Request.write_selection(opts, array_shape),
         :ok <- Request.check_rank(shape, array_shape),
         :ok <- Request.check_stop(stop, start, shape),
         {:ok, nd} <- NDArray.from_list(list, shape, dtype) do
      Request.write_nd(array, nd, start, opts)
    end
  end

  @doc "Like `set_slice/3`, but raises `ZarrBridge.Error`."
  @spec set_slice!(t, term, keyword) :: :ok
  def set_slice!(array, data, opts \\ []), do: Options.bang(set_slice(array, data, opts))

  @doc """
  Reads a slice as a `ZarrBridge.NDArray`: little-endian C-order bytes, or
  for `:string` and `:bytes` arrays a list of binaries in C order.

  Options:
    * `start:`, `stop:`, `step:` - the selection (default: the whole array);
    * `handoff:` - `:auto` (the default) or `true` lets the sidecar hand
      a result of a fixed-size dtype over in a shared-memory file from its
      handoff threshold on; `false` keeps it on the pipe. See "Handoff" in
      `ZarrBridge.Sidecar`, the one meaning of the option;
    * `server:`, `timeout:`.
  """
  @spec read(t, keyword) :: {:ok, NDArray.t()} | {:error, Error.t()}
  def read(%__MODULE__{} = array, opts \\ []) do
    Options.check!(opts, [:start, :stop, :step, :handoff | @common])
    meta = array.metadata

    with {:ok, start} <- Request.selection(opts, :start, meta.shape),
         {:ok, stop} <- Request.selection(opts, :stop, meta.shape),
         {:ok, step} <- Request.selection(opts, :step, meta.shape) do
      params =
        array
        |> Request.base_params()
        |> Request.put_tuple("start", start)
        |> Request.put_tuple("stop", stop)
        |> Request.put_tuple("step", step)
        |> Request.put_handoff(
          Keyword.get(opts, :handoff, :auto),
          Request.expected_bytes(meta, start, stop, step)
        )

      Request.read_call(array, params, opts)
    end
  end

  @doc "Like `read/2`, but raises `ZarrBridge.Error`."
  @spec read!(t, keyword) :: NDArray.t()
  def read!(array, opts \\ []), do: Options.bang(read(array, opts))

  @doc """
  Writes an NDArray, or raw bytes, into the array at `start:`.

    * With a `ZarrBridge.NDArray`, its shape is the shape written; its dtype
      must be the array's (`:invalid_params` otherwise). `stop:`, if given,
      must agree (`:data_size_mismatch`). For `:string` and `:bytes` its data
      is a list of binaries (sent as the request's `values`).
    * With a binary (little-endian, C-order), `stop:` gives the shape; with
      no `stop:` the binary must fill the whole array.

  Data of at least the sidecar's handoff threshold (4 MiB by default) is
  handed over through shared memory (same host only): it is written into a
  file in `/dev/shm` that the sidecar's workers encode from directly, which
  spares the pipe. Other data larger than one stream frame (the sidecar's
  `stream_frame_bytes`, 256 KiB by default; or all of it with
  `handoff: false`, when the file cannot be written, or when handoff is not
  usable with this sidecar, see `ZarrBridge.Sidecar.handoff_usable?/1`) is
  uploaded as a stream; smaller data travels in the request. Both limits
  come from the sidecar's `hello`. Variable-length values
  always travel in the request, so one write of them is limited by the
  sidecar's frame size (64 MiB by default): write large string arrays in
  slices.

  Options: `start:` (default: the origin), `stop:`, `handoff:` (`:auto`
  by default; `true` hands any upload over through shared memory, `false`
  never does; see "Handoff" in `ZarrBridge.Sidecar`), `server:`,
  `timeout:`.
  """
  @spec write(t, NDArray.t() | binary, keyword) :: :ok | {:error, Error.t()}
  def write(array, data, opts \\ [])

  def write(%__MODULE__{} = array, %NDArray{} = nd, opts) do
    Options.check!(opts, [:start, :stop, :handoff | @common])

    with :ok <- Request.check_dtype(nd, array.metadata.dtype),
         {:ok, start, stop} <- Request.write_selection(opts, array.metadata.shape),
         :ok <- Request.check_rank(nd.shape, array.metadata.shape),
         :ok <- Request.check_stop(stop, start, nd.shape) do
      Request.write_nd(array, nd, start, opts)
    end
  end

  def write(%__MODULE__{} = array, data, opts) when is_binary(data) do
    Options.check!(opts, [:start, :stop, :handoff | @common])
    meta = array.metadata

    with {:ok, start, stop} <- Request.write_selection(opts, meta.shape),
         {:ok, shape} <- Request.binary_shape(stop, start, meta.shape),
         {:ok, nd} <- NDArray.new(data, shape, meta.dtype) do
      Request.write_nd(array, nd, start, opts)
    end
  end

  @doc "Like `write/3`, but raises `ZarrBridge.Error`."
  @spec write!(t, NDArray.t() | binary, keyword) :: :ok
  def write!(array, data, opts \\ []), do: Options.bang(write(array, data, opts))

  @doc """
  Changes the array's shape to `new_shape` (same rank) and returns the array
  with its new metadata, as zarr-python's `resize`: growing leaves the new
  region at the fill value, shrinking drops the chunks wholly outside.

      {:ok, array} = ZarrBridge.Array.resize(array, {200, 100})

  Options: `server:`, `timeout:`. Errors: `:read_only`, `:invalid_params`
  (a shape of another rank), `:not_found`.
  """
  @spec resize(t, tuple, keyword) :: {:ok, t} | {:error, Error.t()}
  def resize(%__MODULE__{} = array, new_shape, opts \\ []) do
    Options.check!(opts, @common)
    shape = Request.shape!(new_shape, "new_shape")

    params =
      array
      |> Request.base_params()
      |> Map.merge(%{"mode" => Request.write_mode(array), "shape" => shape})

    Request.metadata_result(array, Request.call(array, "array.resize", params, nil, opts))
  end

  @doc "Like `resize/3`, but raises `ZarrBridge.Error`."
  @spec resize!(t, tuple, keyword) :: t
  def resize!(array, new_shape, opts \\ []), do: Options.bang(resize(array, new_shape, opts))

  @doc """
  Appends `data` along `axis:` (default 0) and returns the array with its
  new metadata, as zarr-python's `append`: the array grows by the data's
  length on that axis, and every other dimension of the data must equal
  the array's.

      {:ok, array} = ZarrBridge.Array.append(array, NDArray.from_list!(rows, {10, 100}, :float64))
      {:ok, array} = ZarrBridge.Array.append(array, {{1, 2}, {3, 4}}, axis: 1)

  `data` is a `ZarrBridge.NDArray` of the array's dtype, or nested tuples
  or lists (as for `set_slice/3`).

  Appends through one sidecar are serialized per array: each grows the
  array from its current extent (whatever other appends or resizes did
  before it) and writes its data at the old end, so concurrent appends
  from many processes each land in a region of their own and none is
  lost. The returned metadata is the array's right after this append; use
  `append_region/3` to learn where the data went. Appends through two
  sidecars to one array are not serialized (see `PROTOCOL.md`).

  Options: `axis:`, `handoff:` (as for `write/3`), `server:`, `timeout:`.
  Errors: `:read_only`, `:data_size_mismatch` or `:invalid_selection`
  (shapes that do not fit), `:invalid_params`, `:conflict` (another process
  changed the array's extent during the append). A failed append shrinks
  the array back to the extent it found (but not on `:conflict`: the
  extent is then the other process's).
  """
  @spec append(t, NDArray.t() | term, keyword) :: {:ok, t} | {:error, Error.t()}
  def append(%__MODULE__{} = array, data, opts \\ []) do
    with {:ok, %{array: array}} <- append_region(array, data, opts), do: {:ok, array}
  end

  @doc "Like `append/3`, but raises `ZarrBridge.Error`."
  @spec append!(t, NDArray.t() | term, keyword) :: t
  def append!(array, data, opts \\ []), do: Options.bang(append(array, data, opts))

  @doc """
  Like `append/3`, and also says where the data went: `start` and `stop`
  (tuples, one entry per dimension, `stop` excluded) are the region this
  append wrote, which is what other processes appending at the same time
  need to find their rows again.

      {:ok, %{array: array, start: start, stop: stop}} =
        ZarrBridge.Array.append_region(array, rows)

      # with 40 rows of 100 appended to an array of 1000 rows:
      # start == {1000, 0}, stop == {1040, 100}
      {:ok, ^rows} = ZarrBridge.Array.read(array, start: start, stop: stop)

  Same options and errors as `append/3`.
  """
  @spec append_region(t, NDArray.t() | term, keyword) ::
          {:ok, %{array: t, start: tuple, stop: tuple}} | {:error, Error.t()}
  def append_region(%__MODULE__{} = array, data, opts \\ []) do
    Options.check!(opts, [:axis, :handoff | @common])
    axis = Keyword.get(opts, :axis, 0)

    if not (is_integer(axis) and axis >= 0),
      do: raise(ArgumentError, "axis must be a non-negative integer, got: #{inspect(axis)}")

    with {:ok, nd} <- Request.to_ndarray(data, array.metadata.dtype),
         :ok <- Request.check_dtype(nd, array.metadata.dtype) do
      params =
        array
        |> Request.base_params()
        |> Map.merge(%{
          "mode" => Request.write_mode(array),
          "axis" => axis,
          "shape" => Tuple.to_list(nd.shape)
        })

      Request.append_result(array, Request.call(array, "array.append", params, nd.data, opts))
    end
  end

  @doc "Like `append_region/3`, but raises `ZarrBridge.Error`."
  @spec append_region!(t, NDArray.t() | term, keyword) :: %{array: t, start: tuple, stop: tuple}
  def append_region!(array, data, opts \\ []),
    do: Options.bang(append_region(array, data, opts))

  @doc """
  The keys of the chunks (for a sharded array: the shards) stored for the
  array, relative to the array and sorted, e.g. `["c/0/0", "c/0/1"]` (v3)
  or `["0.0", "0.1"]` (v2). Chunks never written, or deleted because they
  held only the fill value, are not listed.

  Options: `server:`, `timeout:`.
  """
  @spec chunk_keys(t, keyword) :: {:ok, [String.t()]} | {:error, Error.t()}
  def chunk_keys(%__MODULE__{} = array, opts \\ []) do
    Options.check!(opts, @common)

    case Request.call(array, "array.chunk_keys", Request.base_params(array), nil, opts) do
      {:ok, %{"keys" => keys}} when is_list(keys) -> {:ok, keys}
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  @doc "Like `chunk_keys/2`, but raises `ZarrBridge.Error`."
  @spec chunk_keys!(t, keyword) :: [String.t()]
  def chunk_keys!(array, opts \\ []), do: Options.bang(chunk_keys(array, opts))

  @doc """
  The raw stored bytes of one chunk (or shard): encoded, exactly as in the
  store. `key_or_coords` is a key from `chunk_keys/2`, or the chunk's grid
  coordinates as a tuple (`{0, 1}`), turned into a key by the array's chunk
  key encoding (`ZarrBridge.Metadata.chunk_key/2`).

  Options: `server:`, `timeout:`. Errors: `:not_found` (no such chunk
  stored), `:forbidden_path` (a key that leaves the array).
  """
  @spec read_chunk_raw(t, String.t() | tuple, keyword) :: {:ok, binary} | {:error, Error.t()}
  def read_chunk_raw(%__MODULE__{} = array, key_or_coords, opts \\ []) do
    Options.check!(opts, @common)

    with {:ok, key} <- Request.chunk_key(array, key_or_coords) do
      params = array |> Request.base_params() |> Map.put("key", key)

      case Request.call(array, "array.read_chunk_raw", params, nil, opts) do
        {:ok, %{"data" => {:bin, data}}} -> {:ok, data}
        {:ok, other} -> Options.unexpected(other)
        {:error, %Error{}} = error -> error
      end
    end
  end

  @doc "Like `read_chunk_raw/3`, but raises `ZarrBridge.Error`."
  @spec read_chunk_raw!(t, String.t() | tuple, keyword) :: binary
  def read_chunk_raw!(array, key_or_coords, opts \\ []),
    do: Options.bang(read_chunk_raw(array, key_or_coords, opts))

  @doc """
  Stores `data` as the raw bytes of one chunk (or shard), atomically and
  without decoding or checking it: it must be what the array's codecs
  produce. `key_or_coords` is as for `read_chunk_raw/3`. Large data
  travels as for `write/3`.

  Options: `handoff:` (as for `write/3`), `server:`, `timeout:`. Errors:
  `:read_only`, `:forbidden_path`.
  """
  @spec write_chunk_raw(t, String.t() | tuple, binary, keyword) :: :ok | {:error, Error.t()}
  def write_chunk_raw(%__MODULE__{} = array, key_or_coords, data, opts \\ [])
      when is_binary(data) do
    Options.check!(opts, [:handoff | @common])

    with {:ok, key} <- Request.chunk_key(array, key_or_coords) do
      params =
        array
        |> Request.base_params()
        |> Map.merge(%{"mode" => Request.write_mode(array), "key" => key})

      case Request.call(array, "array.write_chunk_raw", params, data, opts) do
        {:ok, %{}} -> :ok
        {:ok, other} -> Options.unexpected(other)
        {:error, %Error{}} = error -> error
      end
    end
  end

  @doc "Like `write_chunk_raw/4`, but raises `ZarrBridge.Error`."
  @spec write_chunk_raw!(t, String.t() | tuple, binary, keyword) :: :ok
  def write_chunk_raw!(array, key_or_coords, data, opts \\ []),
    do: Options.bang(write_chunk_raw(array, key_or_coords, data, opts))

  @doc """
  Replaces the array's user attributes with `attributes` (a JSON-like map;
  atom keys become strings).

      :ok = ZarrBridge.Array.put_attributes(array, %{"units" => "meters"})

  The struct's `metadata.attributes` is not changed (it is a snapshot); see
  `refresh/2`. Options: `server:`, `timeout:`.
  """
  @spec put_attributes(t, map, keyword) :: :ok | {:error, Error.t()}
  def put_attributes(%__MODULE__{} = array, attributes, opts \\ []) when is_map(attributes),
    do: Request.attributes_call(array, "array.put_attributes", attributes, opts)

  @doc "Like `put_attributes/3`, but raises `ZarrBridge.Error`."
  @spec put_attributes!(t, map, keyword) :: :ok
  def put_attributes!(array, attributes, opts \\ []),
    do: Options.bang(put_attributes(array, attributes, opts))

  @doc """
  Merges `attributes` into the array's user attributes (top-level keys are
  replaced, the others kept). Options: `server:`, `timeout:`.
  """
  @spec update_attributes(t, map, keyword) :: :ok | {:error, Error.t()}
  def update_attributes(%__MODULE__{} = array, attributes, opts \\ []) when is_map(attributes),
    do: Request.attributes_call(array, "array.update_attributes", attributes, opts)

  @doc "Like `update_attributes/3`, but raises `ZarrBridge.Error`."
  @spec update_attributes!(t, map, keyword) :: :ok
  def update_attributes!(array, attributes, opts \\ []),
    do: Options.bang(update_attributes(array, attributes, opts))

  @doc """
  Reads the array's current user attributes from the store.
  Options: `server:`, `timeout:`.
  """
  @spec get_attributes(t, keyword) :: {:ok, map} | {:error, Error.t()}
  def get_attributes(%__MODULE__{} = array, opts \\ []) do
    Options.check!(opts, @common)

    case Request.call(array, "array.get_attributes", Request.base_params(array), nil, opts) do
      {:ok, %{"attributes" => %{} = attributes}} -> {:ok, Options.plain(attributes)}
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  @doc "Like `get_attributes/2`, but raises `ZarrBridge.Error`."
  @spec get_attributes!(t, keyword) :: map
  def get_attributes!(array, opts \\ []), do: Options.bang(get_attributes(array, opts))

  @doc """
  Takes a new metadata snapshot (shape, attributes, …) from the store and
  returns the updated struct; the mode is kept. Options: `server:`,
  `timeout:`.
  """
  @spec refresh(t, keyword) :: {:ok, t} | {:error, Error.t()}
  def refresh(%__MODULE__{} = array, opts \\ []) do
    Options.check!(opts, @common)
    params = array |> Request.base_params() |> Map.put("mode", "r")
    Request.metadata_result(array, Request.call(array, "array.open", params, nil, opts))
  end

  @doc "Like `refresh/2`, but raises `ZarrBridge.Error`."
  @spec refresh!(t, keyword) :: t
  def refresh!(array, opts \\ []), do: Options.bang(refresh(array, opts))
end
