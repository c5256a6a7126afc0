defmodule ZarrBridge.GroupTest do
  # ZarrBridge.Group against the real sidecar, with zarr-python in a separate
  # process checking what Elixir built and building what Elixir opens.
  use ExUnit.Case, async: true

  import ZarrBridge.Test.TmpDir

  alias ZarrBridge.{Array, Error, Group, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 120_000

  # Where a hierarchy lives, for each storage (memory: a fresh store name).
  defp location(:filesystem, dir, format),
    do: [storage: :filesystem, path: Path.join(dir, "fs-v#{format}")]

  defp location(:zip, dir, format),
    do: [storage: :zip, path: Path.join(dir, "zip-v#{format}.zip")]

  defp location(:memory, _dir, format),
    do: [storage: :memory, path: "group-test-#{format}-#{System.unique_integer([:positive])}"]

  test "create, nest, list, walk and open by path, in every storage and both formats" do
    dir = tmp_dir("group")

    for storage <- [:filesystem, :zip, :memory], format <- [2, 3] do
      label = "#{storage} v#{format}"
      where = location(storage, dir, format)

      {:ok, root} = Group.create(where ++ [zarr_version: format, attributes: %{"team" => "B"}])
      assert %Group{storage: ^storage, node: "", zarr_format: ^format, consolidated: false} = root
      assert root.attributes == %{"team" => "B"}
      assert root.mode == :"w-"

      {:ok, labels} = Group.create_group(root, "labels", attributes: %{"kind" => "text"})
      assert labels.node == "labels" and labels.zarr_format == format

      {:ok, m} =
        Group.create_array(root, "measurements",
          shape: {4, 3},
          chunks: {2, 3},
          dtype: :float64,
          attributes: %{"units" => "meters"}
        )

      assert m.node == "measurements" and m.storage == storage
      :ok = Array.write(m, NDArray.from_list!(Enum.map(1..12, &(&1 * 1.5)), {4, 3}, :float64))

      {:ok, names} = Group.create_array(labels, "names", shape: {3}, dtype: :string)
      assert names.node == "labels/names"
      :ok = Array.write(names, NDArray.from_list!(["a", "ü", ""], {3}, :string))

      # a deeper group made in one call by its path
      {:ok, deep} = Group.create_group(root, "x/y")
      assert deep.node == "x/y"

      assert Group.members(root) ==
               {:ok, [{"labels", :group}, {"measurements", :array}, {"x", :group}]},
             label

      assert Group.members(labels) == {:ok, [{"names", :array}]}

      assert Group.tree(root) ==
               {:ok,
                """
                /
                ├── labels
                │   └── names (3,) string
                ├── measurements (4, 3) float64
                └── x
                    └── y
                """},
             label

      assert Group.tree!(labels) == "/labels\n└── names (3,) string\n"

      # open again: the root, a subgroup and an array by their paths
      {:ok, again} = Group.open(where ++ [mode: :r])
      assert again.attributes == %{"team" => "B"} and again.zarr_format == format

      assert {:ok, %Group{node: "labels", attributes: %{"kind" => "text"}}} =
               Group.open_group(again, "labels")

      {:ok, names_again} = Group.open_array(again, "labels/names")
      assert names_again.mode == :r
      assert Array.get_slice(names_again) == {:ok, {"a", "ü", ""}}

      {:ok, by_node} = ZarrBridge.open(where ++ [node: "/labels/names/"])
      assert by_node.node == "labels/names"

      {:ok, sub} = Group.open(where ++ [node: "labels"])
      assert sub.node == "labels"
    end
  end

  test "attributes: get, put replaces, update merges; the struct keeps its snapshot" do
    dir = tmp_dir("group")

    for storage <- [:filesystem, :zip, :memory] do
      {:ok, g} = Group.create(location(storage, dir, 3) ++ [attributes: %{"a" => 1}])
      assert Group.get_attributes(g) == {:ok, %{"a" => 1}}
      assert :ok = Group.put_attributes(g, %{"b" => [1, 2], "c" => %{"d" => nil}})
      assert Group.get_attributes!(g) == %{"b" => [1, 2], "c" => %{"d" => nil}}
      assert :ok = Group.update_attributes(g, %{"b" => "x", "e" => true})
      assert Group.get_attributes!(g) == %{"b" => "x", "c" => %{"d" => nil}, "e" => true}
      assert g.attributes == %{"a" => 1}
      assert {:ok, %Group{attributes: %{"b" => "x"}}} = Group.refresh(g)

      {:ok, read_only} = Group.open(location_of(g) ++ [mode: :r])

      assert {:error, %Error{code: :read_only}} = Group.put_attributes(read_only, %{"z" => 1})
      assert {:error, %Error{code: :read_only}} = Group.update_attributes(read_only, %{"z" => 1})

      assert {:error, %Error{code: :invalid_params}} =
               Group.put_attributes(g, %{"bin" => {:bin, "x"}})
    end
  end

  test "zarr-python sees the hierarchy Elixir built, and Elixir the one zarr-python built" do
    dir = tmp_dir("group")

    for storage <- [:filesystem, :zip], format <- [2, 3] do
      where = location(storage, dir, format)
      {:ok, root} = Group.create(where ++ [zarr_version: format, attributes: %{"by" => "elixir"}])
      {:ok, g} = Group.create_group(root, "a")
      {:ok, arr} = Group.create_array(g, "b", shape: {5}, chunks: {2}, dtype: :int16)
      :ok = Array.set_slice(arr, {1, -2, 3, -4, 5})
      {:ok, _} = Group.create_group(g, "c", attributes: %{"n" => format})
    end

    out =
      Python.run!(
        Python.prelude() <>
          """
          for kind, path, fmt in eval(sys.argv[1]):
              st = open_store(kind, path, 'r')
              g = zarr.open_group(st, mode='r')
              assert g.metadata.zarr_format == fmt and dict(g.attrs) == {'by': 'elixir'}
              assert g['a/b'][:].tolist() == [1, -2, 3, -4, 5]
              assert g['a/b'].metadata.zarr_format == fmt
              assert dict(g['a/c'].attrs) == {'n': fmt}
              print(kind, fmt, sorted(name for name, _ in g.members(max_depth=None)))
          """,
        [
          Python.literal(
            for s <- [:filesystem, :zip], f <- [2, 3], do: {s, location(s, dir, f)[:path], f}
          )
        ]
      )

    for s <- [:filesystem, :zip], f <- [2, 3] do
      assert out =~ "#{s} #{f} ['a', 'a/b', 'a/c']"
    end

    # zarr-python builds, Elixir walks; the tree text is zarr-python's own
    # (numeric dtypes print the same in both)
    py_dir = Path.join(dir, "py")

    out =
      Python.run!(
        Python.prelude() <>
          """
          root = sys.argv[1]
          for fmt in (2, 3):
              for kind in ('filesystem', 'zip'):
                  path = f'{root}-{kind}-v{fmt}' + ('.zip' if kind == 'zip' else '')
                  st = open_store(kind, path, 'w')
                  g = zarr.open_group(st, mode='w', zarr_format=fmt, attributes={'fmt': fmt})
                  g.create_group('zeta').create_array('deep', shape=(2, 2), dtype='int8')
                  g.create_array('alpha', shape=(3,), dtype='float32')
                  g.create_group('mid', attributes={'m': 1})
                  g.create_array('mid/arr', shape=(), dtype='uint16')
                  print('TREE', kind, fmt)
                  print(g.tree(plain=True), end='')
                  print('SUBTREE', kind, fmt)
                  print(g['zeta'].tree(plain=True), end='')
                  if kind == 'zip':
                      st.close()
          print('END')
          """,
        [py_dir]
      )

    for format <- [2, 3], storage <- [:filesystem, :zip] do
      path = "#{py_dir}-#{storage}-v#{format}" <> if(storage == :zip, do: ".zip", else: "")
      [_, rest] = String.split(out, "TREE #{storage} #{format}\n", parts: 2)
      [tree, rest] = String.split(rest, "SUBTREE #{storage} #{format}\n", parts: 2)
      [subtree | _] = String.split(rest, ~r/^(TREE|END)/m, parts: 2)

      {:ok, g} = Group.open(storage: storage, path: path, mode: :r)
      assert g.attributes == %{"fmt" => format}
      assert Group.tree(g) == {:ok, tree}, "#{storage} v#{format}"
      assert Group.tree(Group.open_group!(g, "zeta")) == {:ok, subtree}

      assert Group.members(g) ==
               {:ok, [{"alpha", :array}, {"mid", :group}, {"zeta", :group}]}

      {:ok, scalar} = Group.open_array(g, "mid/arr")
      assert scalar.metadata.shape == {} and scalar.metadata.dtype == :uint16
      assert Array.get_slice(scalar) == {:ok, 0}
    end
  end

  test "consolidated metadata: Elixir consolidates, both sides open through it" do
    dir = tmp_dir("group")

    for storage <- [:filesystem, :zip, :memory], format <- [2, 3] do
      where = location(storage, dir, format)
      {:ok, root} = Group.create(where ++ [zarr_version: format])
      {:ok, sub} = Group.create_group(root, "sub")
      {:ok, a} = Group.create_array(sub, "a", shape: {3}, dtype: :int32, attributes: %{"x" => 1})
      :ok = Array.set_slice(a, {7, 8, 9})

      assert {:ok, %Group{consolidated: true, node: ""}} = ZarrBridge.consolidate_metadata(where)
      assert {:ok, %Group{consolidated: true}} = Group.open(where)
      assert Group.members(root) == {:ok, [{"sub", :group}]}
      {:ok, a2} = ZarrBridge.open(where ++ [node: "sub/a", mode: :r])
      assert a2.metadata.attributes == %{"x" => 1}
      assert Array.get_slice(a2) == {:ok, {7, 8, 9}}

      if storage != :memory do
        out =
          Python.run!(
            Python.prelude() <>
              """
              st = open_store(sys.argv[1], sys.argv[2], 'r')
              g = zarr.open_group(st, mode='r', use_consolidated=True)
              print(g.metadata.consolidated_metadata is not None, g['sub/a'][:].tolist())
              """,
            [Atom.to_string(storage), where[:path]]
          )

        assert out == "True [7, 8, 9]\n"
      end
    end
  end

  test "zarr-python's consolidated metadata is used, v2 .zmetadata and v3 inline" do
    dir = tmp_dir("group")

    Python.run!(
      Python.prelude() <>
        """
        root = sys.argv[1]
        for fmt in (2, 3):
            path = f'{root}/v{fmt}'
            g = zarr.open_group(path, mode='w', zarr_format=fmt)
            g.create_array('listed', shape=(2,), dtype='int8', attributes={'in': 'consolidated'})
            zarr.consolidate_metadata(path)
            # added after consolidating: zarr-python's consolidated view does not list it
            zarr.create_array(path, name='late', shape=(1,), dtype='int8', zarr_format=fmt)
            print(sorted(zarr.open_group(path, mode='r').array_keys()))
        """,
      [dir]
    )

    for format <- [2, 3] do
      path = Path.join(dir, "v#{format}")
      {:ok, g} = Group.open(path: path)
      assert g.consolidated
      # as zarr-python: the members are those of the consolidated metadata
      assert Group.members(g) == {:ok, [{"listed", :array}]}
      {:ok, listed} = Group.open_array(g, "listed")
      assert listed.metadata.attributes == %{"in" => "consolidated"}

      # consolidating again brings the new array in
      {:ok, _} = ZarrBridge.consolidate_metadata(path: path)
      assert Group.members(g) == {:ok, [{"late", :array}, {"listed", :array}]}
    end
  end

  test "errors" do
    dir = tmp_dir("group")
    where = [path: Path.join(dir, "g")]
    {:ok, g} = Group.create(where)
    {:ok, _} = Group.create_array(g, "arr", shape: {2}, dtype: :int8)

    assert {:error, %Error{code: :already_exists}} = Group.create(where)
    assert {:ok, %Group{}} = Group.create(where ++ [mode: :a])
    assert {:error, %Error{code: :not_found}} = Group.open(path: Path.join(dir, "none"))
    assert {:error, %Error{code: :not_found}} = Group.open_group(g, "arr")
    assert {:error, %Error{code: :not_found}} = Group.open_array(g, "missing")
    assert {:error, %Error{code: :not_found}} = ZarrBridge.open(where)
    assert {:error, %Error{code: :already_exists}} = Group.create_group(g, "arr")
    assert {:error, %Error{code: :forbidden_path}} = Group.open(where ++ [node: "../outside"])
    assert {:error, %Error{code: :forbidden_path}} = Group.open_group(g, "a/../../b")

    assert {:error, %Error{code: :not_found}} =
             Group.open(storage: :memory, path: "never-made-#{System.unique_integer()}")

    # mode :a creates a missing group
    assert {:ok, %Group{node: "made"}} = Group.open(where ++ [node: "made", mode: :a])
    assert {:ok, members} = Group.members(g)
    assert {"made", :group} in members

    assert_raise Error, fn -> Group.open!(path: Path.join(dir, "none")) end
    assert_raise Error, fn -> Group.create!(where) end
    assert_raise Error, fn -> Group.open_array!(g, "missing") end
    assert_raise Error, fn -> Group.open_group!(g, "missing") end

    assert_raise Error, fn ->
      Group.members!(Group.open_group!(g, "made") |> Map.put(:node, "gone"))
    end

    assert_raise ArgumentError, fn -> Group.create(path: dir, bogus: 1) end
    assert_raise ArgumentError, fn -> Group.create(path: dir, storage: :s3) end
    assert_raise ArgumentError, fn -> Group.create(path: dir, zarr_version: 4) end
    assert_raise ArgumentError, fn -> Group.create(path: dir, attributes: [1]) end
    assert_raise ArgumentError, fn -> Group.open(path: dir, mode: :w) end

    assert_raise ArgumentError, fn ->
      Group.create_array(g, "x", path: dir, shape: {1}, dtype: :int8)
    end

    assert_raise ArgumentError, fn -> Group.create_group(g, "", []) end
    assert_raise ArgumentError, fn -> Group.open_array(g, "arr", bogus: 1) end
    assert_raise ArgumentError, fn -> Group.members(g, bogus: 1) end

    assert {:error, %Error{}} = Group.members(g, server: :no_such_sidecar)
  end

  # ------------------------------------------------------------------

  defp location_of(%Group{storage: storage, path: path, node: node}),
    do: [storage: storage, path: path, node: node]
end
