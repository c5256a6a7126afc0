defmodule ZarrBridge.Group do
  @moduledoc """
  A Zarr group (v2 or v3): a node that holds arrays and other groups.

      iex> path = Path.join(ZarrBridge.Test.DocFiles.dir(), "results.zip")
      iex> {:ok, root} = ZarrBridge.Group.create(storage: :zip, path: path)
      iex> {:ok, _scores} = ZarrBridge.Group.create_array(root, "scores", shape: {100}, dtype: :float32)
      iex> {:ok, labels} = ZarrBridge.Group.create_group(root, "labels")
      iex> {:ok, _names} = ZarrBridge.Group.create_array(labels, "names", shape: {200}, dtype: :string)
      iex> ZarrBridge.Group.members(root)
      {:ok, [{"labels", :group}, {"scores", :array}]}
      iex> {:ok, root} = ZarrBridge.Group.open(storage: :zip, path: path, mode: :r)
      iex> {:ok, tree} = ZarrBridge.Group.tree(root)
      iex> String.split(tree, "\\n", trim: true)
      ["/", "├── labels", "│   └── names (200,) string", "└── scores (100,) float32"]

  (`IO.puts(tree)` prints that tree.)

  Like `ZarrBridge.Array`, the struct is a handle plus a snapshot: the
  fields `storage`, `path`, `node` (the group's path inside the store, `""`
  for the root), `store` (the wire store map), `server` and `mode` say
  where it is and how it was opened; `zarr_format`, `attributes` and
  `consolidated` (whether the group holds consolidated metadata, see
  `ZarrBridge.consolidate_metadata/1`) were read when it was opened.

  Members are named by their path relative to the group: `"labels"`, or
  `"labels/names"` for a deeper node.

  Every function takes `server:` and `timeout:`; unknown options raise
  `ArgumentError`. Errors come as `{:error, %ZarrBridge.Error{}}`:
  `:not_found` (no group there, or an array where a group was expected),
  `:already_exists`, `:read_only`, `:forbidden_path`, `:store_error`, and
  the sidecar's.
  """

  alias ZarrBridge.{Array, Error, Options, Sidecar}

  @enforce_keys [:path, :store]
  defstruct [
    :path,
    :store,
    :zarr_format,
    node: "",
    storage: :filesystem,
    attributes: %{},
    consolidated: false,
    mode: :"r+",
    server: Sidecar
  ]

  @type t :: %__MODULE__{
          storage: :filesystem | :zip | :memory,
          path: String.t(),
          node: String.t(),
          zarr_format: 2 | 3,
          attributes: map,
          consolidated: boolean,
          server: GenServer.server(),
          store: %{required(String.t()) => String.t()},
          mode: :r | :"r+" | :a | :w | :"w-"
        }

  @common [:server, :timeout]
  @where [:storage, :path, :node]
  @modes [:r, :"r+", :a, :w, :"w-"]

  @doc """
  Creates a group and returns it.

  Options: `:storage`, `:path` (required), `:node` (see "Stores" in
  `ZarrBridge`); `:zarr_version` (`2` or `3`, default `3`); `:attributes`
  (a map); `:mode` (`:"w-"` by default: `:already_exists` if a node is
  there; `:w` overwrites, `:a` opens an existing group); `:server`,
  `:timeout`.
  """
  @spec create(keyword) :: {:ok, t} | {:error, Error.t()}
  def create(opts) when is_list(opts) do
    Options.check!(opts, [:zarr_version, :attributes, :mode | @where ++ @common])
    {storage, path, store} = Options.store!(opts)
    node = Options.node!(opts)
    mode = Options.mode!(Keyword.get(opts, :mode, :"w-"), @modes)

    params =
      %{
        "store" => store,
        "path" => node,
        "mode" => Atom.to_string(mode),
        "zarr_format" => Options.zarr_version!(opts, 3)
      }
      |> put_attributes_param(Keyword.fetch(opts, :attributes))

    base = %{storage: storage, path: path, store: store, node: node, mode: mode}
    group_call(base, opts, "group.create", params)
  end

  @doc "Like `create/1`, but raises `ZarrBridge.Error`."
  @spec create!(keyword) :: t
  def create!(opts), do: Options.bang(create(opts))

  @doc """
  Opens an existing group (v2 or v3, detected; through consolidated
  metadata when the store has it).

  Options: `:storage`, `:path` (required), `:node`; `:mode` (`:"r+"` by
  default; `:r` makes writes below it fail with `:read_only`; `:a` creates
  the group when it is missing); `:server`, `:timeout`.
  """
  @spec open(keyword) :: {:ok, t} | {:error, Error.t()}
  def open(opts) when is_list(opts) do
    Options.check!(opts, [:mode | @where ++ @common])
    {storage, path, store} = Options.store!(opts)
    node = Options.node!(opts)
    mode = Options.mode!(Keyword.get(opts, :mode, :"r+"), [:r, :"r+", :a])
    # Opening reads metadata only ("a" may create); the mode is kept for writes.
    params = %{"store" => store, "path" => node, "mode" => if(mode == :a, do: "a", else: "r")}
    base = %{storage: storage, path: path, store: store, node: node, mode: mode}
    group_call(base, opts, "group.open", params)
  end

  @doc "Like `open/1`, but raises `ZarrBridge.Error`."
  @spec open!(keyword) :: t
  def open!(opts), do: Options.bang(open(opts))

  @doc """
  Creates the array `name` (a path relative to the group) in the group.
  `opts` are those of `ZarrBridge.create/1` without `:storage`, `:path` and
  `:node`, which come from the group; `:zarr_version` defaults to the
  group's (a hierarchy has one format) and `:server` to the group's.
  """
  @spec create_array(t, String.t(), keyword) :: {:ok, Array.t()} | {:error, Error.t()}
  def create_array(%__MODULE__{} = group, name, opts) when is_list(opts) do
    refuse_where!(opts)
    opts = Keyword.put_new(opts, :zarr_version, group.zarr_format || 3)
    Array.Open.create(member_opts(group, name, opts))
  end

  @doc "Like `create_array/3`, but raises `ZarrBridge.Error`."
  @spec create_array!(t, String.t(), keyword) :: Array.t()
  def create_array!(group, name, opts), do: Options.bang(create_array(group, name, opts))

  @doc """
  Creates the subgroup `name` (a path relative to the group). Options as
  `create/1` without `:storage`, `:path` and `:node`; `:zarr_version`
  defaults to the group's.
  """
  @spec create_group(t, String.t(), keyword) :: {:ok, t} | {:error, Error.t()}
  def create_group(%__MODULE__{} = group, name, opts \\ []) when is_list(opts) do
    refuse_where!(opts)
    opts = Keyword.put_new(opts, :zarr_version, group.zarr_format || 3)
    create(member_opts(group, name, opts))
  end

  @doc "Like `create_group/3`, but raises `ZarrBridge.Error`."
  @spec create_group!(t, String.t(), keyword) :: t
  def create_group!(group, name, opts \\ []), do: Options.bang(create_group(group, name, opts))

  @doc """
  Opens the array `name` (a path relative to the group, e.g.
  `"labels/names"`). Options: `:mode` (default: `:r` when the group was
  opened read-only, `:"r+"` otherwise), `:server`, `:timeout`.
  """
  @spec open_array(t, String.t(), keyword) :: {:ok, Array.t()} | {:error, Error.t()}
  def open_array(%__MODULE__{} = group, name, opts \\ []) when is_list(opts) do
    Options.check!(opts, [:mode | @common])
    opts = Keyword.put_new(opts, :mode, member_mode(group))
    Array.Open.open(member_opts(group, name, opts))
  end

  @doc "Like `open_array/3`, but raises `ZarrBridge.Error`."
  @spec open_array!(t, String.t(), keyword) :: Array.t()
  def open_array!(group, name, opts \\ []), do: Options.bang(open_array(group, name, opts))

  @doc """
  Opens the subgroup `name` (a path relative to the group). Options as for
  `open_array/3`.
  """
  @spec open_group(t, String.t(), keyword) :: {:ok, t} | {:error, Error.t()}
  def open_group(%__MODULE__{} = group, name, opts \\ []) when is_list(opts) do
    Options.check!(opts, [:mode | @common])
    opts = Keyword.put_new(opts, :mode, member_mode(group))
    open(member_opts(group, name, opts))
  end

  @doc "Like `open_group/3`, but raises `ZarrBridge.Error`."
  @spec open_group!(t, String.t(), keyword) :: t
  def open_group!(group, name, opts \\ []), do: Options.bang(open_group(group, name, opts))

  @doc """
  The group's direct members, sorted by name: `{name, :array | :group}`.
  """
  @spec members(t, keyword) :: {:ok, [{String.t(), :array | :group}]} | {:error, Error.t()}
  def members(%__MODULE__{} = group, opts \\ []) do
    Options.check!(opts, @common)

    case call(group, "group.members", base_params(group), opts) do
      {:ok, %{"members" => members}} when is_list(members) ->
        members
        |> Enum.map(fn %{"name" => name, "kind" => kind} -> {name, kind(kind)} end)
        |> Enum.sort()
        |> then(&{:ok, &1})

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  @doc "Like `members/2`, but raises `ZarrBridge.Error`."
  @spec members!(t, keyword) :: [{String.t(), :array | :group}]
  def members!(group, opts \\ []), do: Options.bang(members(group, opts))

  @doc """
  The group's hierarchy as text, drawn like zarr-python's `Group.tree()`:
  the group's name (`/` for the root), then every node below it sorted by
  name, arrays with their shape and dtype (the wire dtype name, e.g.
  `float64`, `U8`, `string`).

      /
      ├── labels
      │   └── names (200,) string
      └── measurements (200, 100) float64
  """
  @spec tree(t, keyword) :: {:ok, String.t()} | {:error, Error.t()}
  def tree(%__MODULE__{} = group, opts \\ []) do
    Options.check!(opts, @common)

    case call(group, "group.tree", base_params(group), opts) do
      {:ok, %{"nodes" => nodes}} when is_list(nodes) -> {:ok, render_tree(group, nodes)}
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  @doc "Like `tree/2`, but raises `ZarrBridge.Error`."
  @spec tree!(t, keyword) :: String.t()
  def tree!(group, opts \\ []), do: Options.bang(tree(group, opts))

  @doc "Reads the group's current user attributes from the store."
  @spec get_attributes(t, keyword) :: {:ok, map} | {:error, Error.t()}
  def get_attributes(%__MODULE__{} = group, opts \\ []) do
    Options.check!(opts, @common)

    case call(group, "group.get_attributes", base_params(group), opts) do
      {:ok, %{"attributes" => %{} = attributes}} -> {:ok, Options.plain(attributes)}
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  @doc "Like `get_attributes/2`, but raises `ZarrBridge.Error`."
  @spec get_attributes!(t, keyword) :: map
  def get_attributes!(group, opts \\ []), do: Options.bang(get_attributes(group, opts))

  @doc """
  Replaces the group's user attributes. The struct's `attributes` snapshot
  is not changed (see `refresh/2`).
  """
  @spec put_attributes(t, map, keyword) :: :ok | {:error, Error.t()}
  def put_attributes(%__MODULE__{} = group, attributes, opts \\ []) when is_map(attributes),
    do: attributes_call(group, "group.put_attributes", attributes, opts)

  @doc "Like `put_attributes/3`, but raises `ZarrBridge.Error`."
  @spec put_attributes!(t, map, keyword) :: :ok
  def put_attributes!(group, attributes, opts \\ []),
    do: Options.bang(put_attributes(group, attributes, opts))

  @doc "Merges `attributes` into the group's user attributes (top-level keys)."
  @spec update_attributes(t, map, keyword) :: :ok | {:error, Error.t()}
  def update_attributes(%__MODULE__{} = group, attributes, opts \\ []) when is_map(attributes),
    do: attributes_call(group, "group.update_attributes", attributes, opts)

  @doc "Like `update_attributes/3`, but raises `ZarrBridge.Error`."
  @spec update_attributes!(t, map, keyword) :: :ok
  def update_attributes!(group, attributes, opts \\ []),
    do: Options.bang(update_attributes(group, attributes, opts))

  @doc "Takes a new snapshot of the group's metadata; the mode is kept."
  @spec refresh(t, keyword) :: {:ok, t} | {:error, Error.t()}
  def refresh(%__MODULE__{} = group, opts \\ []) do
    Options.check!(opts, @common)
    params = group |> base_params() |> Map.put("mode", "r")
    base = Map.take(group, [:storage, :path, :store, :node, :mode])
    group_call(base, Keyword.put_new(opts, :server, group.server), "group.open", params)
  end

  @doc "Like `refresh/2`, but raises `ZarrBridge.Error`."
  @spec refresh!(t, keyword) :: t
  def refresh!(group, opts \\ []), do: Options.bang(refresh(group, opts))

  @doc false
  # A group_info map from the sidecar (PROTOCOL.md §8) as the struct.
  @spec from_info(term, map) :: {:ok, t} | {:error, Error.t()}
  def from_info(%{"zarr_format" => format} = info, base) when format in [2, 3] do
    {:ok,
     %__MODULE__{
       storage: base.storage,
       path: base.path,
       store: base.store,
       node: base.node,
       server: base.server,
       mode: base.mode,
       zarr_format: format,
       attributes: Options.plain(Map.get(info, "attributes")) || %{},
       consolidated: Map.get(info, "consolidated") == true
     }}
  end

  def from_info(other, _base), do: Options.unexpected(other)

  # ------------------------------------------------------------------

  defp group_call(base, opts, method, params) do
    server = Options.server(opts)

    case Sidecar.call(server, method, params, Options.call_opts(opts)) do
      {:ok, %{"group" => info}} -> from_info(info, Map.put(base, :server, server))
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  defp attributes_call(group, method, attributes, opts) do
    Options.check!(opts, @common)
    mode = if group.mode == :r, do: "r", else: "r+"

    params =
      group
      |> base_params()
      |> Map.merge(%{"mode" => mode, "attributes" => Options.text_keys(attributes)})

    case call(group, method, params, opts) do
      {:ok, %{"attributes" => _}} -> :ok
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  defp call(group, method, params, opts) do
    Sidecar.call(Options.server(opts, group.server), method, params, Options.call_opts(opts))
  end

  defp base_params(group), do: %{"store" => group.store, "path" => group.node}

  defp member_opts(group, name, opts) do
    [
      storage: group.storage,
      path: path_option(group),
      node: Options.join_node(group.node, name),
      server: Keyword.get(opts, :server, group.server)
    ] ++ Keyword.delete(opts, :server)
  end

  # The memory store's name is the path as given; files are absolute already.
  defp path_option(%__MODULE__{path: path}), do: path

  defp member_mode(%__MODULE__{mode: :r}), do: :r
  defp member_mode(%__MODULE__{}), do: :"r+"

  defp refuse_where!(opts) do
    case Keyword.take(opts, @where) do
      [] ->
        :ok

      given ->
        raise ArgumentError,
              "#{inspect(Keyword.keys(given))} come from the group; give a member name instead"
    end
  end

  defp kind("array"), do: :array
  defp kind("group"), do: :group

  # -- tree -------------------------------------------------------------

  defp render_tree(group, nodes) do
    prefix = if group.node == "", do: "", else: group.node <> "/"

    entries =
      for %{"path" => path, "kind" => kind} = node <- nodes,
          rel = relative(path, prefix),
          rel != "" do
        {rel, kind(kind), node}
      end

    children = Enum.group_by(entries, fn {rel, _, _} -> parent(rel) end)
    root = "/" <> group.node

    IO.iodata_to_binary([root, "\n" | render_level(children, "", "")])
  end

  # A node's path relative to the group (the sidecar may give either form).
  defp relative(path, ""), do: Options.normalize_node(path)

  defp relative(path, prefix) do
    path = Options.normalize_node(path)

    cond do
      String.starts_with?(path, prefix) ->
        binary_part(path, byte_size(prefix), byte_size(path) - byte_size(prefix))

      path <> "/" == prefix ->
        ""

      true ->
        path
    end
  end

  defp parent(rel) do
    case String.split(rel, "/") do
      [_] -> ""
      parts -> parts |> Enum.drop(-1) |> Enum.join("/")
    end
  end

  defp render_level(children, key, prefix) do
    items = children |> Map.get(key, []) |> Enum.sort_by(&elem(&1, 0))
    last = length(items) - 1

    items
    |> Enum.with_index()
    |> Enum.map(fn {{rel, kind, node}, i} ->
      {connector, child_prefix} =
        if i == last, do: {"└── ", prefix <> "    "}, else: {"├── ", prefix <> "│   "}

      name = rel |> String.split("/") |> List.last()

      [
        prefix,
        connector,
        name,
        describe(kind, node),
        "\n" | render_level(children, rel, child_prefix)
      ]
    end)
  end

  defp describe(:group, _node), do: ""

  defp describe(:array, node) do
    shape =
      case Map.get(node, "shape") do
        [one] -> "(#{one},)"
        dims when is_list(dims) -> "(" <> Enum.join(dims, ", ") <> ")"
        _ -> nil
      end

    dtype =
      case Map.get(node, "dtype") do
        nil -> nil
        name when is_binary(name) -> name
        other -> inspect(Options.plain(other))
      end

    [shape, dtype] |> Enum.reject(&is_nil/1) |> Enum.map(&[" ", &1])
  end

  defp put_attributes_param(params, {:ok, attrs}),
    do: Map.put(params, "attributes", Options.attributes!(attrs))

  defp put_attributes_param(params, :error), do: params
end
